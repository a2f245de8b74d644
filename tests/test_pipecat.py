"""The pipecat adapter in a real pipecat pipeline: real video frames (Megamind.avi) and real
speech (LibriVox) as the input-transport frames a voice agent sees, at real pace, plus the
transcript its speech-to-text service would push; estimates come out as frames, and every
frame goes through unchanged and in order."""

from __future__ import annotations

import asyncio
import re
import time

import numpy as np
import pytest
from conftest import REPO, require_module

require_module("pipecat", install="pip install 'affectstream[pipecat]'")

from audio_fixtures import LIBRIVOX, read_speech  # noqa: E402
from pipecat.frames.frames import (  # noqa: E402
    EndFrame,
    InputAudioRawFrame,
    InputImageRawFrame,
    TranscriptionFrame,
    UserImageRawFrame,
    UserStartedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline  # noqa: E402
from pipecat.pipeline.worker import PipelineWorker  # noqa: E402
from pipecat.processors.frame_processor import FrameProcessor  # noqa: E402
from pipecat.workers.runner import WorkerRunner  # noqa: E402

from affectstream.core.labels import LABELS, MODALITIES  # noqa: E402
from affectstream.integrations.pipecat import (  # noqa: E402
    AffectEstimateFrame,
    AffectProcessor,
    bgr_image,
    pcm16,
)

SPOKEN = "he was not an ill disposed young man"  # the LibriVox file's transcription


class Collect(FrameProcessor):
    """The rest of the pipeline: records every frame that reaches it."""

    def __init__(self) -> None:
        super().__init__()
        self.frames = []

    async def process_frame(self, frame, direction) -> None:
        await super().process_frame(frame, direction)
        self.frames.append(frame)
        await self.push_frame(frame, direction)


@pytest.fixture(scope="module")
def video_rgb(megamind):
    import cv2

    cap = cv2.VideoCapture(str(megamind))
    frames = []
    while len(frames) < 60:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    assert len(frames) == 60
    return frames


def user_frames(video_rgb):
    """What an input transport and an STT service push over 4 s: 20 ms of 16 kHz PCM16 per
    audio frame, an RGB image every 80 ms, the VAD's start of speech, the final transcript."""
    speech = read_speech(LIBRIVOX / "sense_and_sensibility_01_austen_64kb-0880.wav", "int16")
    audio = np.concatenate([np.zeros(8000, np.int16), speech, np.zeros(8000, np.int16)])
    h, w = video_rgb[0].shape[:2]
    out = [(0.0, UserStartedSpeakingFrame())]
    for i in range(len(audio) // 320):
        t = i * 0.02
        out.append((t, InputAudioRawFrame(audio[i * 320 : (i + 1) * 320].tobytes(), 16000, 1)))
        if i % 4 == 0:
            img = video_rgb[(i // 4) % len(video_rgb)]
            out.append((t, UserImageRawFrame(img.tobytes(), (w, h), "RGB", user_id="u1")))
    t_words = (8000 + len(speech)) / 16000 + 0.3
    out.append((t_words, TranscriptionFrame(SPOKEN, "u1", "2026-12-01T00:00:00Z")))
    out.sort(key=lambda x: x[0])
    return out, t_words


async def run_pipeline(processor, sent, tail_s: float = 1.5):
    sink = Collect()
    worker = PipelineWorker(Pipeline([processor, sink]), cancel_on_idle_timeout=False)
    started = asyncio.Event()

    @worker.event_handler("on_pipeline_started")
    async def _started(worker, frame):
        started.set()

    async def feed():
        await asyncio.wait_for(started.wait(), 60)
        t0 = time.monotonic()
        for t, frame in sent:
            await asyncio.sleep(max(0.0, t0 + t - time.monotonic()))
            await worker.queue_frame(frame)
        await asyncio.sleep(tail_s)  # estimates after the last words
        await worker.queue_frame(EndFrame())

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await asyncio.wait_for(asyncio.gather(runner.run(), feed()), 120)
    return sink.frames


def test_estimates_come_out_of_a_real_pipecat_pipeline(video_rgb):
    sent, t_words = user_frames(video_rgb)
    processor = AffectProcessor()  # words: the pipeline's transcripts
    got = asyncio.run(run_pipeline(processor, sent))

    ests = [f.estimate for f in got if isinstance(f, AffectEstimateFrame)]
    passed = [f for f in got if not isinstance(f, AffectEstimateFrame)]
    sent_ids = [id(f) for _, f in sent]
    # every frame went on, unchanged and in order (the pipeline's Start/End frames beside them)
    assert [id(f) for f in passed if id(f) in set(sent_ids)] == sent_ids
    assert processor.rejected == 0 and processor.estimates == len(ests)
    assert not processor.recognizer.running  # the EndFrame closed it

    # estimates over the run, in time order, each one a whole Estimate.to_dict() (how many a
    # second is this machine's figure, not the test's)
    assert len(ests) >= 2 and [e["t"] for e in ests] == sorted(e["t"] for e in ests)
    assert set(ests[0]) >= {"emotion", "probs", "present", "status", "relevance", "transcript"}
    assert all(e["emotion"] in LABELS and set(e["status"]) == set(MODALITIES) for e in ests)
    assert sum(e["present"]["face"] for e in ests) >= 0.6 * len(ests)  # Megamind's face
    # every face in view, each with its id and box; one of them the primary
    assert all((len(e["faces"]) > 0) == e["present"]["face"] for e in ests)
    assert all(sum(f["primary"] for f in e["faces"]) == 1 for e in ests if e["faces"])
    assert any(e["present"]["voice"] for e in ests)  # the LibriVox speech
    words = [e for e in ests if e["present"]["text"]]
    assert words and all(SPOKEN in e["transcript"] for e in words)  # the STT's transcript
    assert "text" in words[-1]["modalities"] and words[-1]["relevance"]["text"] > 0


def test_image_and_audio_bytes_are_read_as_pipecat_gives_them(video_rgb):
    import cv2

    rgb = video_rgb[0]
    h, w = rgb.shape[:2]
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    assert np.array_equal(bgr_image(rgb.tobytes(), (w, h), "RGB"), bgr)
    assert np.array_equal(bgr_image(rgb.tobytes(), (w, h), None), bgr)  # RGB by its size
    rgba = cv2.cvtColor(rgb, cv2.COLOR_RGB2RGBA)
    assert np.array_equal(bgr_image(rgba.tobytes(), (w, h), "RGBA"), bgr)
    assert np.array_equal(bgr_image(bgr.tobytes(), (w, h), "BGR"), bgr)
    ok, jpeg = cv2.imencode(".jpg", bgr)
    decoded = bgr_image(jpeg.tobytes(), (w, h), "JPEG")
    assert decoded.shape == bgr.shape and np.abs(decoded.astype(int) - bgr).mean() < 4
    with pytest.raises(ValueError, match=r"is not 720x528 RGB"):
        bgr_image(rgb.tobytes()[:-3], (w, h), "RGB")
    with pytest.raises(ValueError, match="nor an image OpenCV can decode"):
        bgr_image(b"not an image", (w, h), "WEBP")

    stereo = np.arange(-400, 400, dtype=np.int16).reshape(-1, 2)
    assert np.array_equal(pcm16(stereo.tobytes(), 2), stereo)
    with pytest.raises(ValueError, match="not whole PCM16 frames of 2 channels"):
        pcm16(stereo.tobytes()[:-2], 2)


def test_bad_frames_are_counted_and_still_passed_on(video_rgb):
    h, w = video_rgb[0].shape[:2]
    bad = [
        (0.0, InputImageRawFrame(b"garbage", (w, h), "WEBP")),
        (0.1, InputAudioRawFrame(b"\x00\x01\x02", 16000, 2)),
    ]
    processor = AffectProcessor(words="off")
    got = asyncio.run(run_pipeline(processor, bad, tail_s=0.5))
    assert processor.rejected == 2
    assert [f for f in got if isinstance(f, (InputImageRawFrame, InputAudioRawFrame))] == [
        f for _, f in bad
    ]
    ests = [f.estimate for f in got if isinstance(f, AffectEstimateFrame)]
    assert ests and ests[-1]["status"]["text"] == "off"
    with pytest.raises(ValueError, match="words must be one of pipeline, own, off"):
        AffectProcessor(words="whisper")


def test_the_readme_pipecat_example_runs(capsys):
    readme = (REPO / "README.md").read_text()
    section = readme.split("## In a pipecat pipeline", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    exec(compile(code, "README.md", "exec"), {"__name__": "__main__"})
    lines = [x for x in capsys.readouterr().out.splitlines() if " s " in x]
    times = [float(x.split()[0]) for x in lines]  # one line per estimate, in time order
    assert len(times) >= 2 and times == sorted(times)
    assert all(x.split()[2] in LABELS and "'face':" in x for x in lines)
