"""A tiny released bundle (random tiny Llama + BPE tokenizer + manifest) for serving tests, in seconds."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

from tiny_lm import tiny_llama, tiny_tokenizer

from distill.release.bundle import MANIFEST, MANIFEST_FORMAT, bundle_files
from distill.train.tokenizer import DEFAULT_CHAT_TEMPLATE


def write_tiny_bundle(path: Path, *, name: str = "tiny-support", version: str = "0.1.0", seed: int = 0,
                      chat_template: str = DEFAULT_CHAT_TEMPLATE, corpus: list[str] | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = tiny_tokenizer(corpus) if corpus else tiny_tokenizer()
    tokenizer.chat_template = chat_template
    tiny_llama(len(tokenizer), seed=seed).save_pretrained(path)
    tokenizer.save_pretrained(path)
    (path / "README.md").write_text(f"# {name} {version}\n\nA tiny test student.\n")  # the cards verify requires
    (path / "DATASET_CARD.md").write_text(f"# {name} dataset\n\nNo data: a test bundle.\n")
    (path / MANIFEST).write_text(json.dumps({"format": MANIFEST_FORMAT, "name": name, "version": version,
                                             "files": bundle_files(path), "lineage": {}, "gate": {"passed": True}}))
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LoopbackServer:
    """A real uvicorn server for an ASGI app on a loopback port, in a thread."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the loopback server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)
