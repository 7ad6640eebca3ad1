"""Speech through the real eSpeak NG engine (from the espeakng-loader wheel): WAV files of
plausible length, and the CLI's play / --out / run --speak paths on a machine without sound."""

from __future__ import annotations

import os
import sys
import wave
from pathlib import Path

import pytest

from slmkit.errors import InvalidParameterError
from slmkit.tasks.speech import Speaker, speakable
from slmkit.types import SamplingParams
from test_cli import assert_one_line_error, slm

SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank."  # 13 words


def read_wav(path: Path) -> tuple[float, bytes]:
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth()) == (1, 2)
        assert wav.getframerate() >= 16000
        frames = wav.readframes(wav.getnframes())
        return wav.getnframes() / wav.getframerate(), frames


def loudest(frames: bytes) -> int:
    return max(abs(int.from_bytes(frames[i:i + 2], "little", signed=True)) for i in range(0, len(frames), 2))


def test_wav_duration_grows_with_the_words(tmp_path):
    speaker = Speaker()
    short = speaker.save("Hello there, friend.", tmp_path / "short.wav")
    long = speaker.save(" ".join([SENTENCE] * 4), tmp_path / "long.wav")
    short_seconds, short_frames = read_wav(tmp_path / "short.wav")
    long_seconds, long_frames = read_wav(tmp_path / "long.wav")
    assert short_seconds == pytest.approx(short.duration) and long_seconds == pytest.approx(long.duration)
    assert loudest(short_frames) > 1000  # speech, not silence
    # 175 words a minute is 0.34 s a word; pauses at commas and full stops add some.
    assert 0.2 * 3 < short_seconds < 0.9 * 3
    assert 0.2 * 52 < long_seconds < 0.8 * 52
    assert 8 < long_seconds / short_seconds < 30  # 52 words against 3


def test_rate_and_voice(tmp_path):
    slow = Speaker(rate=120).synthesize(SENTENCE).duration
    fast = Speaker(rate=300).synthesize(SENTENCE).duration
    assert fast < slow * 0.7
    assert Speaker("fr").synthesize("Bonjour tout le monde.").duration > 0.5
    with pytest.raises(InvalidParameterError, match="no voice 'xx-nope'"):
        Speaker("xx-nope").synthesize("hi")
    with pytest.raises(InvalidParameterError, match="rate"):
        Speaker(rate=10)
    with pytest.raises(InvalidParameterError, match="nothing to say"):
        Speaker().synthesize("  **  ")


def test_markdown_is_read_as_words():
    assert speakable("# Title\n- **bold** item\n- `code` here\n```python\nx = 1\n```") == "Title bold item code here x = 1"


def test_a_model_answer_read_into_a_wav(llm, tmp_path):
    answer = llm.chat([{"role": "user", "content": "Name three colors."}],
                      SamplingParams(temperature=0, max_tokens=24)).text
    words = len(speakable(answer).split())
    assert words >= 2
    Speaker().save(answer, tmp_path / "answer.wav")
    seconds, _ = read_wav(tmp_path / "answer.wav")
    assert 0.15 * words < seconds < 1.0 * words + 1


def _no_player_env() -> dict[str, str]:
    """PATH with the venv's bin only: no paplay / aplay, as on a machine without sound."""
    return {**os.environ, "PATH": str(Path(sys.executable).parent)}


def test_cli_speak_to_wav_and_from_stdin(tmp_path):
    out = tmp_path / "hello.wav"
    result = slm("speak", SENTENCE, "--out", str(out))
    assert result.returncode == 0, result.stderr
    seconds, _ = read_wav(out)
    assert f"wrote {out}" in result.stderr and 2 < seconds < 10

    result = slm("speak", "-", "-o", str(out), "--voice", "de", "--rate", "200", stdin="Guten Morgen.")
    assert result.returncode == 0, result.stderr
    assert 0.3 < read_wav(out)[0] < 3


def test_cli_speak_without_an_audio_player_says_what_to_do():
    import subprocess

    result = subprocess.run([str(Path(sys.executable).with_name("slm")), "speak", "hello"], capture_output=True,
                            text=True, env=_no_player_env(), timeout=60)
    assert_one_line_error(result, "no audio player found", "--out")


def test_run_speak_prints_the_answer_and_warns_once_without_sound():
    import subprocess

    result = subprocess.run(
        [str(Path(sys.executable).with_name("slm")), "run", "smollm2", "--speak", "-n", "16", "--temperature", "0"],
        input="What is 2 + 2?\nSay hi.\n", capture_output=True, text=True, env=_no_player_env(), timeout=120)
    assert result.returncode == 0, result.stderr
    answers = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(answers) >= 2  # both questions answered in text after the warning
    assert result.stderr.count("warning: not speaking answers: no audio player found") == 1
