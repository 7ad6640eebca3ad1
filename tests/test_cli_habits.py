"""The habits users bring from Ollama, through the real `slm` command: create from a Modelfile,
show --modelfile, cp, rm, ps, stop, NAME:latest, --version, help, Ctrl-C in the REPL."""

from __future__ import annotations

import os
import pty
import select
import signal
import time
from types import SimpleNamespace

import httpx
import pytest
from test_cli import SLM, assert_one_line_error, slm

from slmkit import __version__
from slmkit.cli.tools import compare_footer
from slmkit.store.modelfile import parse

slow = pytest.mark.slow

SYSTEM = "You are a pirate. Answer in one short sentence."
MODELFILE = f'''# a model that answers like a pirate
FROM smollm2:original
SYSTEM """{SYSTEM}"""
PARAMETER temperature 0
PARAMETER num_predict 12
PARAMETER stop "<|im_end|>"
PARAMETER num_ctx 4096
MESSAGE user Who are you?
MESSAGE assistant """Arr, a pirate I be."""
LICENSE """Apache 2.0"""
'''


def test_version_and_help():
    version = slm("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"slm version {__version__}"
    top = slm("help")
    assert top.returncode == 0 and "create" in top.stdout and "ps" in top.stdout
    sub = slm("help", "create")
    assert sub.returncode == 0 and "Modelfile" in sub.stdout and "--file" in sub.stdout
    assert slm("help", "no-such-command").returncode == 2


@slow
def test_modelfile_round_trip_create_show_run(tmp_path):
    (tmp_path / "Modelfile").write_text(MODELFILE)
    created = slm("create", "pirate", "-f", str(tmp_path / "Modelfile"))
    assert created.returncode == 0, created.stderr
    assert "created pirate:original" in created.stdout and "ignored PARAMETER num_ctx" in created.stderr

    shown = slm("show", "pirate", "--modelfile")
    assert shown.returncode == 0, shown.stderr
    for line in (f'SYSTEM """{SYSTEM}"""', "PARAMETER temperature 0.0", "PARAMETER num_predict 12",
                 'PARAMETER stop "<|im_end|>"', 'MESSAGE user """Who are you?"""',
                 'MESSAGE assistant """Arr, a pirate I be."""', 'LICENSE """Apache 2.0"""', "TEMPLATE \"\"\""):
        assert line in shown.stdout, line
    # what show --modelfile prints builds the same model again
    (tmp_path / "Again").write_text(shown.stdout)
    assert slm("create", "pirate2", "-f", str(tmp_path / "Again")).returncode == 0
    again = parse(slm("show", "pirate2:latest", "--modelfile").stdout)
    first = parse(shown.stdout)
    assert (again.system, again.parameters, again.messages, again.template, again.license) == (
        first.system, first.parameters, first.messages, first.template, first.license)
    # the base's defaults (smollm2's top_p) under the Modelfile's
    assert first.parameters == {"temperature": 0.0, "top_p": 0.9, "max_tokens": 12, "stop": ["<|im_end|>"]}

    # run uses the Modelfile's system prompt, messages and parameters: the same answer as the base
    # model given them explicitly (Python API, greedy, 12 tokens)
    answer = slm("run", "pirate", "Where is the treasure?")
    assert answer.returncode == 0, answer.stderr
    from slmkit import LLM, SamplingParams

    with LLM("smollm2:original", context_length=2048) as base:
        expected = base.chat([{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Who are you?"},
                              {"role": "assistant", "content": "Arr, a pirate I be."},
                              {"role": "user", "content": "Where is the treasure?"}],
                             SamplingParams(temperature=0, top_p=0.9, max_tokens=12, stop=["<|im_end|>"]))
    assert answer.stdout.strip() == expected.text.strip() and expected.usage.completion_tokens == 12
    assert slm("rm", "pirate").returncode == slm("rm", "pirate2").returncode == 0


@pytest.mark.parametrize("text,fragments", [
    ("FROM smollm2\nADAPTER ./lora.gguf\n", ["line 2", "'ADAPTER'", "not supported"]),
    ("FROM smollm2\nTEMPERATURE 0\n", ["line 2", "unknown instruction 'TEMPERATURE'", "PARAMETER"]),
    ("SYSTEM hi\n", ["no FROM line"]),
    ("FROM smollm2\nPARAMETER warmth 1\n", ["line 2", "unknown PARAMETER 'warmth'"]),
    ("FROM smollm2\nPARAMETER temperature hot\n", ["line 2", "'hot' is not a number"]),
    ('FROM smollm2\nSYSTEM """never closed\n', ["line 2", "never closed"]),
    ("FROM smollm2\nMESSAGE tool hi\n", ["line 2", "MESSAGE role"]),
    ("FROM ./missing.gguf\n", ["no such file"]),
])
def test_bad_modelfiles_are_one_line_errors(tmp_path, text, fragments):
    (tmp_path / "Modelfile").write_text(text)
    assert_one_line_error(slm("create", "bad", "-f", str(tmp_path / "Modelfile")), *fragments)
    assert "bad:" not in slm("list").stdout


def test_create_without_a_modelfile_says_so(tmp_path):
    assert_one_line_error(slm("create", "x", "-f", str(tmp_path / "nope")), "no Modelfile")


@slow
def test_create_from_a_gguf_path_relative_to_the_modelfile(tmp_path, smollm2_path):
    (tmp_path / "model.gguf").symlink_to(smollm2_path)
    (tmp_path / "Modelfile").write_text("FROM ./model.gguf\nPARAMETER temperature 0\n")
    assert slm("create", "fromfile", "-f", str(tmp_path / "Modelfile")).returncode == 0
    assert "PARAMETER temperature 0.0" in slm("show", "fromfile", "--modelfile").stdout
    assert slm("rm", "fromfile").returncode == 0


@slow
def test_cp_rm_and_the_new_default(slmkit_home, smollm2_path):
    assert slm("import", str(smollm2_path), "--name", "cpsrc").returncode == 0
    assert slm("import", str(smollm2_path), "--name", "cpsrc:second").returncode == 0
    copied = slm("cp", "cpsrc", "cpdst")
    assert copied.returncode == 0 and "cpdst (original, second)" in copied.stdout
    listing = slm("list").stdout
    assert "cpdst:original" in listing and "cpdst:second" in listing
    # removing the default variant says which one takes over
    removed = slm("rm", "cpdst:latest")
    assert removed.returncode == 0 and "deleted cpdst:original" in removed.stdout
    assert "cpdst:second is now the default variant" in removed.stdout
    assert slm("run", "cpdst:latest", "Hi", "-n", "1").returncode == 0
    # rm PATH: a file of the store is removed as its variant; a file outside it never
    path = slmkit_home / "models" / "cpsrc" / "second.gguf"
    assert "deleted cpsrc:second" in slm("rm", str(path)).stdout and not path.exists()
    assert_one_line_error(slm("rm", str(smollm2_path)), "not a file of a model in the store")
    assert smollm2_path.exists()
    assert_one_line_error(slm("cp", "cpsrc", "cpsrc"), "own name")
    for name in ("cpsrc", "cpdst"):
        assert slm("rm", name).returncode == 0


@slow
def test_reimporting_leaves_no_partial_file(slmkit_home, smollm2_path):
    for _ in range(2):
        assert slm("import", str(smollm2_path), "--name", "twice").returncode == 0
    assert sorted(p.name for p in (slmkit_home / "models" / "twice").iterdir()) == ["manifest.json", "original.gguf"]
    assert slm("rm", "twice").returncode == 0


@slow
def test_latest_is_the_default_variant_everywhere():
    assert slm("show", "smollm2:latest").returncode == 0
    result = slm("run", "smollm2:latest", "What is 2 + 2?", "--temperature", "0", "-n", "8")
    assert result.returncode == 0 and result.stdout == slm("run", "smollm2", "What is 2 + 2?", "--temperature", "0",
                                                           "-n", "8").stdout


@slow
def test_beam_search_ignores_the_manifest_temperature():
    # smollm2's manifest sets temperature 0.2, which beam search would refuse if it were applied
    result = slm("run", "smollm2", "What is 2 + 2?", "--num-beams", "2", "-n", "6")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    assert_one_line_error(slm("run", "smollm2", "hi", "--num-beams", "2", "--temperature", "0.5"), "num_beams")


def test_list_remote_prints_config_text_verbatim():
    result = slm("list", "--remote")
    assert result.returncode == 0
    assert "[github]" in result.stdout and "providers.toml" in result.stdout


def test_compare_footers_fit_their_panel():
    run = SimpleNamespace(ttft=0.123, tokens_per_second=45.67, completion_tokens=128, done=True,
                          finish_reason="length")
    assert compare_footer(run, 80) == "TTFT 0.12s · 45.7 tok/s · 128 tok · length"
    for width in (40, 30, 20, 12, 8):
        assert len(compare_footer(run, width)) <= width
    assert compare_footer(run, 12) == "length"


@slow
def test_ps_and_stop_against_a_running_server(server):
    host = ["--host", server.base]
    httpx.post(f"{server.base}/api/generate", json={"model": "smollm2:original"}, timeout=120).raise_for_status()
    listed = slm("ps", *host)
    assert listed.returncode == 0 and "smollm2:original" in listed.stdout and "100% CPU" in listed.stdout
    assert "minutes from now" in listed.stdout or "seconds from now" in listed.stdout
    stopped = slm("stop", "smollm2:original", *host)
    assert stopped.returncode == 0 and "stopped smollm2:original" in stopped.stdout
    assert "smollm2:original" not in slm("ps", *host).stdout
    assert_one_line_error(slm("stop", "smollm2:original", *host), "is not loaded")


def test_ps_without_a_server_is_one_line():
    assert_one_line_error(slm("ps", "--host", "127.0.0.1:9"), "no slmkit server answers", "slm serve")


@slow
def test_ctrl_c_at_the_prompt_asks_for_bye_then_a_second_one_leaves():
    pid, fd = pty.fork()
    status = None
    if pid == 0:  # the child: `slm run` on a terminal, with Ctrl-C's default meaning as a shell gives it
        # (an ignored SIGINT is inherited through exec, and pytest's process may have one ignored)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.execve(SLM[0], [SLM[0], "run", "smollm2"], os.environ.copy())
    output = b""

    def read_until(marker: bytes, timeout: float = 120) -> None:
        nonlocal output
        deadline = time.monotonic() + timeout
        while marker not in output:
            assert time.monotonic() < deadline, output.decode(errors="replace")
            if select.select([fd], [], [], 0.5)[0]:
                try:
                    output += os.read(fd, 4096)
                except OSError:
                    break

    try:
        read_until(b">>> ", 900)  # the first use of smollm2 in a fresh store pulls it (quantize + check)
        time.sleep(1.0)  # the prompt is printed just before input() starts reading: let it start
        os.write(fd, b"\x03")
        read_until(b"Use /bye or Ctrl-D to leave")
        deadline = time.monotonic() + 60
        while output.count(b">>> ") < 2 and time.monotonic() < deadline:  # the prompt again
            read_until(b"Use /bye", 1)
            if select.select([fd], [], [], 0.2)[0]:
                output += os.read(fd, 4096)
        time.sleep(1.0)
        os.write(fd, b"\x03")
        status = _wait_exit(pid, 60)
    finally:
        os.close(fd)
        if status is None:  # still running (or an assert above fired): it must not outlive the test
            os.kill(pid, 9)
            os.waitpid(pid, 0)
    assert status is not None, "the REPL did not leave on the second Ctrl-C: " + output.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, output.decode(errors="replace")
    assert b"Interrupted" not in output


def _wait_exit(pid: int, timeout: float) -> int | None:
    """The child's wait status once it exits, or None if it is still running after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return status
        time.sleep(0.1)
    return None
