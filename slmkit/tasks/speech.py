"""Text to speech with eSpeak NG, offline: read answers aloud, or write them to a WAV file.

The engine is libespeak-ng as shipped (with its voice data) in the ``espeakng-loader`` wheel,
driven through ctypes, so speech works on a clean machine from PyPI alone: no system package, no
sound server, no network. Playing hands the WAV to the first audio player found on PATH
(paplay, pw-play, aplay, ffplay, afplay).
"""

from __future__ import annotations

import ctypes
import io
import re
import shutil
import subprocess
import tempfile
import threading
import wave
from dataclasses import dataclass
from pathlib import Path

from slmkit.errors import AudioOutputError, BackendUnavailableError, InvalidParameterError

DEFAULT_VOICE = "en"
DEFAULT_RATE = 175  # words per minute, eSpeak's own default

# espeak_AUDIO_OUTPUT: samples go to our callback, synthesis returns when it is done.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_ESPEAK_RATE = 1  # espeak_PARAMETER
_CHARS_UTF8 = 1  # espeak_Synth flags
_POS_CHARACTER = 1  # espeak_POSITION_TYPE
_SYNTH_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

# Players in order of preference, with the flags that make them play one file and exit.
_PLAYERS = (
    ("paplay", []), ("pw-play", []), ("aplay", ["-q"]),
    ("ffplay", ["-nodisp", "-autoexit", "-loglevel", "error"]), ("afplay", []),
)


@dataclass
class Audio:
    """Mono 16-bit PCM."""

    samples: bytes
    sample_rate: int

    @property
    def duration(self) -> float:
        return len(self.samples) / 2 / self.sample_rate

    def wav_bytes(self) -> bytes:
        buffer = io.BytesIO()
        with wave.open(buffer, "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(self.sample_rate)
            wav.writeframes(self.samples)
        return buffer.getvalue()

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_bytes(self.wav_bytes())
        return path


class _ESpeak:
    """The process-wide libespeak-ng: it keeps global state, so one instance behind a lock."""

    _instance: "_ESpeak | None" = None
    _create_lock = threading.Lock()

    def __init__(self):
        try:
            import espeakng_loader
        except ImportError:
            raise BackendUnavailableError(
                "speech needs eSpeak NG: pip install 'slmkit[speech]' (or espeakng-loader)"
            ) from None
        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self.lib.espeak_Initialize.restype = ctypes.c_int
        self.lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self.lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self.lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self.lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
            ctypes.c_void_p, ctypes.c_void_p,
        ]
        data_path = espeakng_loader.get_data_path().encode()
        self.sample_rate = self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, 0)
        if self.sample_rate <= 0:
            raise BackendUnavailableError(f"eSpeak NG could not start (voice data at {data_path.decode()})")
        self._chunks: list[bytes] = []
        self._callback = _SYNTH_CALLBACK(self._collect)  # kept referenced: C holds the pointer
        self.lib.espeak_SetSynthCallback(self._callback)
        self.lock = threading.Lock()

    @classmethod
    def get(cls) -> "_ESpeak":
        with cls._create_lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def _collect(self, samples, count, _events) -> int:
        if samples and count > 0:
            self._chunks.append(ctypes.string_at(samples, count * 2))
        return 0  # 0 = go on

    def synthesize(self, text: str, voice: str, rate: int) -> Audio:
        with self.lock:
            if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise InvalidParameterError("voice", f"eSpeak NG has no voice {voice!r} (try en, fr, de, es)")
            self.lib.espeak_SetParameter(_ESPEAK_RATE, rate, 0)
            self._chunks = []
            data = text.encode("utf-8") + b"\0"
            status = self.lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            if status != 0:
                raise BackendUnavailableError(f"eSpeak NG failed to synthesize (status {status})")
            self.lib.espeak_Synchronize()
            samples, self._chunks = b"".join(self._chunks), []
        return Audio(samples, self.sample_rate)


def known_voices() -> set[str]:
    """The voices of the shipped voice data, by their names (``en``, ``fr``, ``en-US``, ...), lower-cased.

    eSpeak NG itself falls back to a default voice for a name it does not know, so an unknown
    voice is caught here instead of speaking English to someone who asked for another language.
    """
    import espeakng_loader

    root = Path(espeakng_loader.get_data_path()) / "lang"
    return {f.name.lower() for f in root.rglob("*") if f.is_file()}


def check_voice(voice: str) -> None:
    base = voice.split("+", 1)[0].strip().lower()  # "en+f3": a voice and a variant
    voices = known_voices()
    if base not in voices:
        close = sorted(v for v in voices if v.split("-")[0] == base.split("-")[0])[:5]
        hint = f"; similar: {', '.join(close)}" if close else "; try a language code such as en, fr, de, es"
        raise InvalidParameterError("voice", f"eSpeak NG has no voice {voice!r}{hint}")


class Speaker:
    """Turns text into speech: `synthesize` to `Audio`, `save` a WAV, or `play` it aloud."""

    def __init__(self, voice: str = DEFAULT_VOICE, rate: int = DEFAULT_RATE):
        if not 80 <= rate <= 450:
            raise InvalidParameterError("rate", f"must be 80..450 words per minute, got {rate}")
        check_voice(voice)
        self.voice = voice
        self.rate = rate

    def synthesize(self, text: str) -> Audio:
        text = speakable(text)
        if not text:
            raise InvalidParameterError("text", "there is nothing to say")
        return _ESpeak.get().synthesize(text, self.voice, self.rate)

    def save(self, text: str, path: str | Path) -> Audio:
        audio = self.synthesize(text)
        audio.save(path)
        return audio

    def play(self, text: str) -> str:
        """Speak `text` through an audio player; returns the player's name."""
        return play_wav(self.synthesize(text).wav_bytes())


def play_wav(wav: bytes) -> str:
    """Play WAV bytes with the first player on PATH that succeeds; returns its name."""
    failures = []
    with tempfile.NamedTemporaryFile(suffix=".wav") as file:
        file.write(wav)
        file.flush()
        for name, flags in _PLAYERS:
            path = shutil.which(name)
            if path is None:
                continue
            result = subprocess.run([path, *flags, file.name], capture_output=True, text=True)
            if result.returncode == 0:
                return name
            failures.append(f"{name}: {(result.stderr.strip().splitlines() or ['failed'])[-1]}")
    if failures:
        raise AudioOutputError(f"could not play audio ({'; '.join(failures)})")
    raise AudioOutputError("no audio player found (install pulseaudio-utils or alsa-utils for paplay/aplay)")


_MARKUP = re.compile(r"```\w*|`|\*\*?|__|^#+\s*|^\s*[-*•]\s+", re.MULTILINE)


def speakable(text: str) -> str:
    """Text as it should be read: Markdown marks (fences, emphasis, headings, bullets) dropped, their words kept."""
    return re.sub(r"\s+", " ", _MARKUP.sub(" ", text)).strip()
