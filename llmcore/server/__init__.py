"""OpenAI 兼容的推理服务器与聊天页面（两条轨道共用，不导入任何计算引擎）。

- chat_template.py：消息 → 词元的对话模板（默认一个纯文本中文模板，模型可以自带模板）；
- engine.py：服务器眼里的模型接口 `Engine`、基于各轨道 stream_generate 的 `GPTEngine`、排队与取消；
- protocol.py：OpenAI Chat Completions 的请求校验与响应格式；
- app.py：Starlette 应用（/v1/models、/v1/chat/completions、/health、聊天页面）；
- run.py：uvicorn 启动与 `serve` 子命令；static/：聊天页面（HTML/JS/CSS，不依赖 CDN）。

需要 `pip install -e ".[serve]"`（starlette、uvicorn）。
"""

from .chat_template import ZH_TEMPLATE, ChatTemplate, ChineseChatTemplate
from .engine import Engine, GPTEngine, ModelWorker, TextAssembler

__all__ = ["ZH_TEMPLATE", "ChatTemplate", "ChineseChatTemplate", "Engine", "GPTEngine", "ModelWorker",
           "TextAssembler", "create_app", "serve"]


def __getattr__(name: str):  # create_app / serve 需要 starlette，用到时才导入
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "serve":
        from .run import serve

        return serve
    raise AttributeError(name)
