"""Processors used only by the tests, loaded through ``FILEJOBS_PROCESSORS`` like any plugin."""

from __future__ import annotations

import os
import signal
import threading
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from filejobs.processors import Context, Output, Processor, ProcessorError, RetryableError
from filejobs.testing.processors import Sleep as Sleep  # "tests.sample_processors:Sleep" (re-exported)

ALL = [
    "tests.sample_processors:Secretive",
    "tests.sample_processors:Sleep",
    "tests.sample_processors:Fail",
    "tests.sample_processors:Flaky",
    "tests.sample_processors:Crash",
    "tests.sample_processors:Boom",
    "tests.sample_processors:Upper",
    "tests.sample_processors:EchoHtml",
    "tests.sample_processors:TextOnly",
    "tests.sample_processors:Chatty",
    "tests.sample_processors:Hog",
    "tests.sample_processors:Where",
    "tests.sample_processors:WhereHeavy",
]


class FailParams(BaseModel):
    code: str = "bad_input"
    message: str = "this file cannot be processed"
    retryable: bool = False


class Fail(Processor):
    name = "fail"
    description = "Always fails with the given code; for tests."
    Params = FailParams

    def run(self, ctx: Context, params: BaseModel) -> Output:
        assert isinstance(params, FailParams)
        if params.retryable:
            raise RetryableError(params.code, params.message)
        raise ProcessorError(params.code, params.message)


class FlakyParams(BaseModel):
    succeed_on: int = Field(default=2, ge=1)
    crash: bool = False


class Flaky(Processor):
    name = "flaky"
    description = "Fails retryably (or dies) until the given attempt; for tests."
    Params = FlakyParams

    def run(self, ctx: Context, params: BaseModel) -> Output:
        assert isinstance(params, FlakyParams)
        attempt = int(ctx.output_dir.name)  # outputs/<job id>/<attempt>
        if attempt < params.succeed_on:
            if params.crash:
                os.kill(os.getpid(), signal.SIGKILL)
            raise RetryableError("flaky", f"attempt {attempt} fails")
        return Output(result={"attempt": attempt})


class Crash(Processor):
    name = "crash"
    description = "Kills its own process; for tests."

    def run(self, ctx: Context, params: BaseModel) -> Output:
        os.kill(os.getpid(), signal.SIGKILL)
        raise AssertionError("unreachable")


class Boom(Processor):
    name = "boom"
    description = "Raises an unexpected exception (a processor bug); for tests."

    def run(self, ctx: Context, params: BaseModel) -> Output:
        raise RuntimeError("kaboom at /secret/server/path")


class Upper(Processor):
    name = "upper"
    description = "Writes an upper-cased copy of a text file; for tests."
    accepts = ("text/*",)

    def run(self, ctx: Context, params: BaseModel) -> Output:
        out = ctx.output_dir / "upper.txt"
        out.write_bytes(ctx.input_path.read_bytes().upper())
        return Output(result={"bytes": out.stat().st_size}, file=out, file_name=f"{ctx.file_name}.upper.txt")


class EchoHtml(Processor):
    name = "echo-html"
    description = "Returns the uploaded bytes as an HTML page (untrusted content as a result); for tests."

    def run(self, ctx: Context, params: BaseModel) -> Output:
        out = ctx.output_dir / "page.html"
        out.write_bytes(ctx.input_path.read_bytes())
        return Output(file=out, file_name="page.html", content_type="text/html")


class TextOnly(Processor):
    name = "text-only"
    description = "Accepts only plain text; for content-type checks."
    accepts = ("text/plain",)

    def run(self, ctx: Context, params: BaseModel) -> Output:
        return Output(result={"ok": True})


class Chatty(Processor):
    """Writes to stdout every way a processor might, including lines that look like protocol."""

    name = "chatty"
    description = "Prints to stdout (and fd 1) while it works; for tests."

    def run(self, ctx: Context, params: BaseModel) -> Output:
        import sys

        print("chatty: plain print")
        print('{"type": "done", "result": {"forged": true}}')
        sys.stdout.write("chatty: no newline yet ")
        sys.stdout.flush()
        os.write(1, b'chatty: raw fd 1 {"type": "error", "code": "forged"}\n')
        ctx.progress(0.5, "half")
        print("chatty: after progress", flush=True)
        return Output(result={"chatty": True})


class HogParams(BaseModel):
    mib: int = Field(default=16, ge=0)
    in_thread: bool = False


class Hog(Processor):
    """Maps ``mib`` MiB at once (untouched zero pages: no RAM is used when there is no limit)."""

    name = "hog"
    description = "Allocates the given amount of memory, in its own thread if asked; for tests."
    Params = HogParams

    def run(self, ctx: Context, params: BaseModel) -> Output:
        assert isinstance(params, HogParams)
        size = params.mib * 2**20
        if params.in_thread:
            thread = threading.Thread(target=bytearray, args=(size,))
            thread.start()
            thread.join()
        else:
            assert len(bytearray(size)) == size
        return Output(result={"mib": params.mib, "pid": os.getpid()})


class SecretiveParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: SecretStr
    label: str = "plain"


class Secretive(Processor):
    name = "secretive"
    description = "Takes a secret param; for tests of secret handling."
    Params = SecretiveParams

    def run(self, ctx: Context, params: BaseModel) -> Output:
        assert isinstance(params, SecretiveParams)
        return Output(result={"token_ok": params.token.get_secret_value() == "s3cret", "label": params.label})


class WhereParams(BaseModel):
    fail: Literal["no", "error", "bug"] = "no"
    write: bool = False
    #: Only where it runs in the test's own process (light, inline): hold until WHERE_GATE opens.
    hold: bool = False


#: Set by a held ``where`` once it runs; it then waits (at most 10 s) for the test to open the gate.
WHERE_HELD = threading.Event()
WHERE_GATE = threading.Event()


class Where(Processor):
    """Says which process ran it: a light processor, run in the worker's thread on a small input."""

    name = "where"
    description = "Reports the pid of the process it ran in (light); for tests."
    Params = WhereParams
    light = True

    def run(self, ctx: Context, params: BaseModel) -> Output:
        assert isinstance(params, WhereParams)
        if params.fail == "error":
            raise ProcessorError("where_refused", "refused on purpose")
        if params.fail == "bug":
            raise RuntimeError("kaboom at /secret/server/path")
        out = None
        if params.write:
            out = ctx.output_dir / "where.txt"
            out.write_bytes(ctx.input_path.read_bytes())
        if params.hold:
            WHERE_HELD.set()
            WHERE_GATE.wait(10)
        return Output(result={"pid": os.getpid(), "size": ctx.input_path.stat().st_size}, file=out)


class WhereHeavy(Where):
    name = "where-heavy"
    description = "The same as where, not light: always in a child; for tests."
    light = False
