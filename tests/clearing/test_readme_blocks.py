"""The README's code blocks, run as written, in README order, in a fresh copy of the project.

A newcomer pastes the blocks one after the other into one terminal, in a fresh clone; this test
does the same, so that the README cannot drift from the code:

- the folder is a copy of the files a clone would hold (git's tracked files plus new files not
  ignored, as they are in this checkout); the environment has no CLEARING_* variable, so every
  command meets the defaults (the embedded SQLite database under `var/`);
- the first block creates `.venv` and installs the project into it; every later block uses that
  one install (the blocks that would install again are not run, see below);
- shell blocks run in bash with `set -euo pipefail`, one stretch at a time; the variables a block
  sets (`PLATFORM=$(...)`) carry over to the later blocks, as in one terminal session;
- a Python block runs with the venv's interpreter and sees the shell's variables of the same
  name (`KEYID`), the value a reader would have pasted in;
- a line that starts a server runs in the background until it answers: `clearing serve` stays up
  for the blocks after it (the SDK example talks to it) and is stopped with Ctrl-C (SIGINT) at
  the end; `clearing scheduler` is stopped with Ctrl-C once it says it runs. Both must
  exit 0. Port 8000 is replaced by a free port: the machine running the tests is shared.

Two markers, an HTML comment on the line before a block, change how a block runs; the test
allows exactly these, on exactly these blocks:

- `<!-- readme-test: skip ... -->` on the test command alone: the suite running itself from
  inside itself would recurse, and the suite is what runs this test anyway. The test checks it
  is the one skipped block and that it is the command `.ci/run` runs.
- `<!-- readme-test: help ... -->` on the benchmarks: each runs for minutes with every core
  busy and measures rather than checks. Each line runs with `--help` appended, so a renamed or
  missing script still fails here.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
BLOCK = re.compile(
    r"(?:<!-- readme-test: (?P<marker>\w+)[^>]*-->\n)?```(?P<lang>sh|python)\n(?P<body>.*?)```",
    re.DOTALL,
)
SERVER = re.compile(r"^\.venv/bin/clearing (serve|scheduler)\b")
ASSIGNED = re.compile(r"^(?:export )?([A-Za-z_]\w*)=", re.MULTILINE)
README_PORT = "8000"


@dataclass(frozen=True)
class Block:
    """One fenced block of the README."""

    lang: str
    body: str
    marker: str | None


def readme_blocks(text: str) -> list[Block]:
    """The README's sh and python blocks, in order, with their marker if any."""
    return [Block(m["lang"], m["body"], m["marker"]) for m in BLOCK.finditer(text)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _fresh_copy(folder: Path) -> None:
    """Copy what a clone of this checkout holds (tracked and new unignored files) to `folder`."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():  # a file deleted but not yet committed is not in a clone either
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, folder / name)


class Session:
    """One terminal session in `folder`: shell variables carry from one stretch to the next."""

    def __init__(self, folder: Path, names: list[str], scratch: Path) -> None:
        self.folder = folder
        self.names = names
        self.scratch = scratch
        self.variables: dict[str, str] = {}
        self.env = {
            k: v for k, v in os.environ.items() if not k.startswith(("CLEARING_", "VIRTUAL_ENV"))
        }
        self.outputs: list[str] = []
        self.timings: list[tuple[str, float]] = []

    def _env(self) -> dict[str, str]:
        return {**self.env, **self.variables}

    def shell(self, lines: list[str]) -> str:
        """Run shell lines; keep the variables they set; return their stdout."""
        state = self.scratch / "variables"
        script = "\n".join(
            [
                "set -euo pipefail",
                *lines,
                # Only reached when every line succeeded: saves the session's variables.
                f"for __name in {' '.join(self.names) or ':'}; do",
                '  if [ -n "${!__name+x}" ]; then printf "%s=%s\\0" "$__name" "${!__name}"; fi',
                f"done > {state}",
            ]
        )
        began = time.monotonic()
        done = subprocess.run(
            ["bash", "-c", script],
            cwd=self.folder,
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=900,
        )
        self.timings.append((lines[0][:60], round(time.monotonic() - began, 1)))
        self._check(done, "\n".join(lines))
        for item in filter(None, state.read_text().split("\0")):
            name, _, value = item.partition("=")
            self.variables[name] = value
        return done.stdout

    def python(self, body: str) -> str:
        """Run a Python block with the venv's interpreter, the shell's variables as its names."""
        source = self.scratch / "block.py"
        source.write_text(body)
        prelude = (
            "import os, sys\n"
            f"names = {{n: os.environ[n] for n in {self.names!r} if n in os.environ}}\n"
            "code = compile(open(sys.argv[1]).read(), 'README.md', 'exec')\n"
            "exec(code, {'__name__': '__main__', **names})\n"
        )
        done = subprocess.run(
            [".venv/bin/python", "-c", prelude, str(source)],
            cwd=self.folder,
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        self._check(done, body)
        return done.stdout

    def start(self, line: str) -> subprocess.Popen[str]:
        """Start a long-running line in the background, in its own process group."""
        log = (self.scratch / f"server-{len(self.outputs)}.log").open("w")
        self.outputs.append(str(log.name))
        return subprocess.Popen(
            ["bash", "-c", f"exec {line}"],
            cwd=self.folder,
            env=self._env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )

    @staticmethod
    def _check(done: subprocess.CompletedProcess[str], what: str) -> None:
        assert done.returncode == 0, f"{what}\nexit {done.returncode}\n{done.stdout}\n{done.stderr}"
        assert "Traceback" not in done.stderr, f"{what}\n{done.stderr}"


def _wait_until(
    ready: Callable[[], bool], process: subprocess.Popen[str], log: Path, seconds: float
) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, f"exited {process.returncode}:\n{log.read_text()}"
        if ready():
            return
        time.sleep(0.2)
    raise AssertionError(f"not ready after {seconds} s:\n{log.read_text()}")


def _interrupt(process: subprocess.Popen[str], log: Path) -> None:
    """Ctrl-C, as in a terminal; it must stop cleanly and soon."""
    process.send_signal(signal.SIGINT)
    try:
        code = process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise
    text = log.read_text()
    assert code == 0, f"exit {code}:\n{text}"
    assert "Traceback" not in text, text


def _start_server(
    session: Session, line: str, kind: str, port: int
) -> tuple[subprocess.Popen[str], Path] | None:
    """Start a server line; `serve` is returned running, the scheduler is stopped once up."""
    process = session.start(line)
    log = Path(session.outputs[-1])
    if kind == "serve":
        _wait_until(lambda: _answers(port), process, log, 120)
        return process, log
    _wait_until(lambda: "scheduler running" in log.read_text(), process, log, 120)
    _interrupt(process, log)
    return None


def _answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/v1/platform/keys", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_markers_are_the_two_allowed_ones() -> None:
    blocks = readme_blocks(README.read_text())
    skipped = [b for b in blocks if b.marker == "skip"]
    assert len(skipped) == 1
    ci = (ROOT / ".ci" / "run").read_text()
    assert skipped[0].body.strip() in ci  # the README's test command is the one CI runs
    assert ".venv/bin/pytest" in skipped[0].body
    for block in blocks:
        assert block.marker in (None, "skip", "help"), block
        if block.marker == "help":
            commands = [ln.split("#")[0].strip() for ln in block.body.splitlines()]
            assert all(re.fullmatch(r"\.venv/bin/python benchmarks/\w+\.py", c) for c in commands)


def test_readme_blocks_run_as_written(
    tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    started = time.monotonic()
    folder, scratch = tmp_path / "project", tmp_path / "scratch"
    folder.mkdir()
    scratch.mkdir()
    _fresh_copy(folder)
    port = _free_port()
    text = README.read_text().replace(f"--port {README_PORT}", f"--port {port}")
    text = text.replace(f"127.0.0.1:{README_PORT}", f"127.0.0.1:{port}")
    blocks = readme_blocks(text)
    names = sorted({n for b in blocks if b.lang == "sh" for n in ASSIGNED.findall(b.body)})
    session = Session(folder, names, scratch)
    servers: list[tuple[subprocess.Popen[str], Path]] = []
    demo_output = ""
    try:
        for block in blocks:
            if block.marker == "skip":
                continue
            if block.lang == "python":
                out = session.python(block.body)
                # The SDK example prints the accrual's id and the member's available points.
                assert out.split()[-1] == "100", out
                continue
            lines = block.body.splitlines()
            if block.marker == "help":
                session.shell([ln.split("#")[0].strip() + " --help" for ln in lines])
                continue
            stretch: list[str] = []
            for line in lines:
                match = SERVER.match(line)
                if match is None:
                    stretch.append(line)
                    continue
                if stretch:
                    session.shell(stretch)
                    stretch = []
                server = _start_server(session, line, match[1], port)
                if server is not None:
                    servers.append(server)
            if stretch:
                out = session.shell(stretch)
                if "clearing demo" in block.body:
                    demo_output = out
        for process, log in servers:
            _interrupt(process, log)
    finally:
        for process, _ in servers:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
    # The commands the demo prints to explore what it made are the README's, word for word.
    shown = [ln for b in blocks for ln in b.body.splitlines() if ln.startswith("CLEARING_VAR_DIR=")]
    assert shown
    for line in shown:
        assert line in demo_output, (line, demo_output)
    record_property("seconds", round(time.monotonic() - started))
    record_property("stretches", session.timings)


@pytest.mark.parametrize(
    ("marker", "body"),
    [(None, "echo one\n"), ("skip", ".venv/bin/pytest\n")],
)
def test_blocks_are_read_with_their_marker(marker: str | None, body: str) -> None:
    comment = f"<!-- readme-test: {marker} (why) -->\n" if marker else ""
    text = f"text\n\n{comment}```sh\n{body}```\n\n```python\nprint(1)\n```\n"
    assert readme_blocks(text) == [Block("sh", body, marker), Block("python", "print(1)\n", None)]
