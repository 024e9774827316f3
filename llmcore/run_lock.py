"""运行锁：一个输出目录同一时间只属于一个训练进程。

锁文件 ``out_dir/.run.lock`` 里写着持有者的 PID 与主机名。用 ``fcntl.flock`` 加锁：持有者不论怎样
结束（正常退出、异常、SIGKILL），操作系统都会释放锁，所以死掉的进程留下的锁文件不会挡住下一次运行
（“陈旧的锁”）。没有 fcntl 的系统上退回检查 PID 是否还活着。

    with RunLock(out_dir):
        ...   # 训练
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from types import TracebackType
from typing import IO

from .errors import OutputDirError

LOCK_NAME = ".run.lock"

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def read_holder(path: Path) -> str:
    """锁文件里记的持有者（“PID 1234（主机 x）”）；读不出时返回“未知进程”。"""
    try:
        pid, host = (path.read_text(encoding="utf-8").split() + ["", ""])[:2]
    except OSError:
        return "未知进程"
    return f"PID {pid}（主机 {host}）" if pid else "未知进程"


class RunLock:
    """输出目录的独占锁；拿不到时报 OutputDirError，说出持有者的 PID。"""

    def __init__(self, out_dir: str | Path) -> None:
        self.out = Path(out_dir)
        self.path = self.out / LOCK_NAME
        self._file: IO[str] | None = None

    def acquire(self) -> RunLock:
        self.out.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+", encoding="utf-8")
        if fcntl is not None:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                f.close()
                raise OutputDirError(
                    f"输出目录 {self.out} 正被另一个训练进程使用（{read_holder(self.path)}）；"
                    "等它结束、先停掉它，或换一个 --out_dir"
                ) from None
        else:  # 没有 flock：看锁文件里的 PID 是否还活着
            f.seek(0)
            parts = f.read().split()
            if parts and parts[0].isdigit() and int(parts[0]) != os.getpid() and _pid_alive(int(parts[0])):
                f.close()
                raise OutputDirError(
                    f"输出目录 {self.out} 正被另一个训练进程使用（{read_holder(self.path)}）；"
                    "等它结束、先停掉它，或换一个 --out_dir"
                )
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()} {socket.gethostname()}\n")
        f.flush()
        self._file = f
        return self

    def release(self) -> None:
        if self._file is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            pass
        self._file.close()  # 关闭即释放 flock
        self._file = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


__all__ = ["LOCK_NAME", "RunLock", "read_holder"]
