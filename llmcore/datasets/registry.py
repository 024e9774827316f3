"""已知远程文件的登记表：下载地址、sha256 与字节数。

sha256 为 None 的条目还没有经过本项目核实的校验值，下载时只提示、不校验。
`name` 同时是缓存目录里的相对路径，也是镜像 (LLMZH_MIRROR) 下的相对路径。
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RemoteFile:
    """一个可下载的文件。"""

    name: str
    url: str
    sha256: str | None
    size: int | None
    description: str


_RASBT = "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main"
_HF = "https://huggingface.co/openai-community"

KNOWN_FILES: dict[str, RemoteFile] = {
    f.name: f
    for f in [
        RemoteFile(
            "the-verdict.txt",
            f"{_RASBT}/ch02/01_main-chapter-code/the-verdict.txt",
            "b41e41a68f0398a3154ae69e2e4c0e2694e17fe0d66730536837f1b01935b31f",
            20_479,
            "原书第 2、5 章的英文短篇小说 The Verdict",
        ),
        RemoteFile(
            "instruction-data.json",
            f"{_RASBT}/ch07/01_main-chapter-code/instruction-data.json",
            "7e09a9af353722ca15c18bc580f093f9c39d3178335a75177319cb1e1d163944",
            203_524,
            "原书第 7 章的指令数据：1,100 条 {instruction, input, output}",
        ),
        RemoteFile(
            "sms_spam_collection.zip",
            "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip",
            None,
            None,
            "原书第 6 章的 SMS Spam Collection（压缩包内为 SMSSpamCollection）",
        ),
        *[
            RemoteFile(
                f"{model}/model.safetensors",
                f"{_HF}/{model}/resolve/main/model.safetensors",
                None,
                None,
                f"OpenAI 发布的 {model} 权重（Hugging Face 格式）",
            )
            for model in ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")
        ],
    ]
}
