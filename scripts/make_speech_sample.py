"""Make workers/checks/data/speech_16k.wav, the CTC quality gate's speech sample (run once;
the file is committed). Needs espeak-ng (Debian: apt-get install -y espeak-ng) and scipy.

    python scripts/make_speech_sample.py

It runs `espeak-ng -v en-us -s 160 --stdout "the quick brown fox jumps over the lazy dog"`,
trims the silence at both ends and resamples 22050 Hz -> 16 kHz mono 16-bit PCM."""

from __future__ import annotations

import io
import subprocess
import wave
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

from workers.quality import SPEECH_FILE, SPEECH_TEXT

OUT = Path(__file__).resolve().parent.parent / "workers" / "checks" / "data" / SPEECH_FILE


def main() -> None:
    raw = subprocess.run(
        ["espeak-ng", "-v", "en-us", "-s", "160", "--stdout", SPEECH_TEXT.lower()], check=True, capture_output=True
    ).stdout
    with wave.open(io.BytesIO(raw)) as w:
        rate = w.getframerate()
        audio = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float32) / 32768
    loud = np.flatnonzero(np.abs(audio) > 0.01)
    audio = audio[max(loud[0] - rate // 20, 0) : loud[-1] + rate // 20]
    audio = resample_poly(audio, 16_000, rate)
    pcm = (np.clip(audio / np.abs(audio).max() * 0.9, -1, 1) * 32767).astype(np.int16)
    with wave.open(str(OUT), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16_000)
        w.writeframes(pcm.tobytes())
    print(f"{OUT}: {len(pcm) / 16_000:.2f} s, {OUT.stat().st_size} bytes")


if __name__ == "__main__":
    main()
