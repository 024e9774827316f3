"""命令行可预期的错误：每类错误一个异常类、一个退出码（两条轨道共用）。

命令行 (cli.py) 只在最外层捕获这些异常，打印一行中文（说明是什么出了问题、该怎么办）并以对应的
退出码结束；设置环境变量 LLMZH_DEBUG=1 或加 --debug 时改为打印完整回溯。

退出码：
    0    成功
    1    内部错误（程序的缺陷；请加 LLMZH_DEBUG=1 重跑并报告回溯）
    2    参数错误（取值、范围、相互关系，或与检查点的配置冲突）
    3    训练发散（损失变成 NaN/inf；上一个正常的检查点保留）
    4    数据错误（数据文件缺失、不是 UTF-8 文本、太短）
    5    分词器错误（分词器文件缺失、损坏，或词表与模型不符）
    6    检查点错误（缺失、损坏、校验和不符、数值非有限、类型或形状不符）
    7    下载错误（无网络、镜像上的文件不对、离线模式下缓存没有）
    8    设备错误（请求的设备不存在或不可用）
    9    输出目录错误（不可写、正被另一个训练进程使用、--resume=never 时已有旧的运行）
    130  被 Ctrl-C (SIGINT) 中断；143 被 SIGTERM 中断（已保存检查点时同样如此）
"""

from __future__ import annotations

import os

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_DIVERGED = 3
EXIT_DATA = 4
EXIT_TOKENIZER = 5
EXIT_CHECKPOINT = 6
EXIT_DOWNLOAD = 7
EXIT_DEVICE = 8
EXIT_OUTPUT = 9
EXIT_SIGINT = 130

DEBUG_ENV = "LLMZH_DEBUG"


def debug_enabled() -> bool:
    """是否要求打印完整回溯（环境变量 LLMZH_DEBUG 为 1/true/yes/on）。"""
    return os.environ.get(DEBUG_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


class LLMError(Exception):
    """本项目可预期的错误的基类；exit_code 是命令行的退出码。"""

    exit_code = EXIT_INTERNAL


class UsageError(LLMError, ValueError):
    """参数取值不对，或参数之间、参数与检查点之间冲突。"""

    exit_code = EXIT_USAGE


class DataError(LLMError, ValueError):
    """训练/评估数据不可用。"""

    exit_code = EXIT_DATA


class TokenizerError(LLMError, ValueError):
    """分词器文件缺失、损坏或与模型不符。"""

    exit_code = EXIT_TOKENIZER


class DeviceError(LLMError, RuntimeError):
    """请求的设备不存在或不可用。"""

    exit_code = EXIT_DEVICE


class OutputDirError(LLMError, OSError):
    """输出目录不可写、被占用，或已有旧的运行而没有允许覆盖。"""

    exit_code = EXIT_OUTPUT


__all__ = [
    "DEBUG_ENV", "DataError", "DeviceError", "EXIT_CHECKPOINT", "EXIT_DATA", "EXIT_DEVICE", "EXIT_DIVERGED",
    "EXIT_DOWNLOAD", "EXIT_INTERNAL", "EXIT_OK", "EXIT_OUTPUT", "EXIT_SIGINT", "EXIT_TOKENIZER", "EXIT_USAGE",
    "LLMError", "OutputDirError", "TokenizerError", "UsageError", "debug_enabled",
]
