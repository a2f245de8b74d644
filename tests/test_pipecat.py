"""The pipecat adapter in a real pipecat pipeline: real video frames (Megamind.avi) and real
speech (LibriVox) as the input-transport frames a voice agent sees, at real pace, plus the
transcript its speech-to-text service would push; estimates come out as frames, and every
frame goes through unchanged and in order. Then each way a pipecat user can get it slightly
wrong, each in a real pipeline: the error or status they get, and the one log line."""

from __future__ import annotations

import asyncio
import re
import time

import numpy as np
import pytest
from conftest import REPO, require_module

require_module("pipecat", install="pip install 'affectstream[pipecat]'")

from audio_fixtures import LIBRIVOX, read_speech  # noqa: E402
from loguru import logger  # noqa: E402
from pipecat.frames.frames import (  # noqa: E402
    EndFrame,
    InputAudioRawFrame,
    InputImageRawFrame,
    InterimTranscriptionFrame,
    TranscriptionFrame,
    UserImageRawFrame,
    UserStartedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline  # noqa: E402
from pipecat.pipeline.worker import PipelineWorker  # noqa: E402
from pipecat.processors.frame_processor import FrameProcessor  # noqa: E402
from pipecat.processors.frameworks.rtvi import RTVIServerMessageFrame  # noqa: E402
from pipecat.workers.runner import WorkerRunner  # noqa: E402

from affectstream.core.labels import LABELS, MODALITIES  # noqa: E402
from affectstream.integrations.pipecat import (  # noqa: E402
    NO_WORDS,
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


async def run_pipeline(processor, sent, tail_s: float = 1.5, paced: bool = True):
    """`sent`: (seconds from the start, frame); `paced` False sends them at once (frames
    that carry their own `pts`)."""
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
            await asyncio.sleep(max(0.0, t0 + t - time.monotonic()) if paced else 0)
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

    # on pipecat's clock (no pts here: each frame's arrival): one time line, the frame's pts
    frames = [f for f in got if isinstance(f, AffectEstimateFrame)]
    pts = [f.pts for f in frames]
    assert pts == sorted(pts) and pts[0] >= 0
    assert [abs(f.pts / 1e9 - f.estimate["pipeline_t"]) < 1e-3 for f in frames] == [True] * len(
        frames
    )


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
    with pytest.raises(ValueError, match=r"declared 720x528 RGB \(1140480 bytes\), but 1140477"):
        bgr_image(rgb.tobytes()[:-3], (w, h), "RGB")
    with pytest.raises(ValueError, match="nor an image OpenCV can decode"):
        bgr_image(b"not an image", (w, h), "WEBP")

    stereo = np.arange(-400, 400, dtype=np.int16).reshape(-1, 2)
    assert np.array_equal(pcm16(stereo.tobytes(), 2), stereo)
    with pytest.raises(ValueError, match="not whole PCM16 frames of 2 channels"):
        pcm16(stereo.tobytes()[:-2], 2)


@pytest.fixture
def warnings():
    """What reaches pipecat's logger (loguru) at WARNING and above during the test."""
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="WARNING", format="{message}")
    yield lines
    logger.remove(sink)


def test_bad_frames_are_refused_each_kind_logged_once_and_still_passed_on(video_rgb, warnings):
    rgb = video_rgb[30]  # not the first: a dark frame cannot tell its width
    h, w = rgb.shape[:2]
    bad = [
        (0.0, InputImageRawFrame(b"garbage", (w, h), "WEBP")),
        (0.05, InputImageRawFrame(b"more garbage", (w, h), "WEBP")),
        (0.1, InputAudioRawFrame(b"\x00\x01\x02", 16000, 2)),
        (0.15, InputAudioRawFrame(b"\x00\x01\x02\x03\x04", 16000, 2)),
        (0.2, InputImageRawFrame(rgb.tobytes()[:-3], (w, h), "RGB")),
        (0.25, InputImageRawFrame(b"", (0, 0), "RGB")),
        (0.3, InputImageRawFrame(b"\x00" * 12, (0, 4), "RGB")),
        (0.35, InputImageRawFrame(rgb.tobytes(), (h, w), "RGB")),  # width and height swapped
        (0.4, InputImageRawFrame(rgb.tobytes(), (w, h), "RGB")),  # a good one
    ]
    processor = AffectProcessor(words="off")
    got = asyncio.run(run_pipeline(processor, bad, tail_s=0.5))
    assert processor.rejected == 8
    assert processor.rejected_by_kind == {
        "image undecodable": 2,
        "audio bytes not whole frames": 2,
        "image size does not match its bytes": 1,
        "image without bytes": 1,
        "image without pixels": 1,
        "image width and height swapped": 1,
    }
    # every frame still went on, in order
    assert [f for f in got if isinstance(f, (InputImageRawFrame, InputAudioRawFrame))] == [
        f for _, f in bad
    ]
    # one line per kind, through pipecat's logger, saying what was declared and what came
    refusals = [x for x in warnings if "not read" in x]
    assert len(refusals) == 6
    text = "\n".join(refusals)
    assert "declared 720x528 RGB (1140480 bytes), but 1140477 bytes came" in text
    assert "image frame of 0x0 with no bytes" in text
    assert "declared 0x4 RGB: no pixels, but 12 bytes came" in text
    assert "is not whole PCM16 frames of 2 channels (4 bytes each)" in text
    assert "declared 528x720 (width x height), but its rows line up at width 720" in text
    ests = [f.estimate for f in got if isinstance(f, AffectEstimateFrame)]
    assert ests and ests[-1]["status"]["text"] == "off"


def test_options_are_typed_keywords_and_an_unknown_one_is_a_type_error():
    with pytest.raises(TypeError, match="frobnicate"):
        AffectProcessor(rate_hz=5, frobnicate=True)
    with pytest.raises(ValueError, match="words must be one of pipeline, own, off"):
        AffectProcessor(words="whisper")
    with pytest.raises(TypeError, match="rate_hz must be a number"):
        AffectProcessor(rate_hz="5")
    with pytest.raises(ValueError, match="rate_hz must be positive"):
        AffectProcessor(rate_hz=0)
    with pytest.raises(ValueError, match=r"modalities: unknown \['smell'\]"):
        AffectProcessor(modalities=["face", "smell"])
    with pytest.raises(TypeError, match="modalities takes names"):
        AffectProcessor(modalities="face")
    with pytest.raises(TypeError, match="models takes another processor's `.models`"):
        AffectProcessor(models={"face": object()})


def test_rate_modalities_and_estimates_to_the_client(video_rgb):
    """rate_hz=5 ticks every 0.2 s; face only; rtvi=True: each estimate also as an RTVI server
    message, which pipecat's RTVI observer sends to the client."""
    sent, _ = user_frames(video_rgb)
    processor = AffectProcessor(rate_hz=5, modalities=["face"], words="off", rtvi=True)
    got = asyncio.run(run_pipeline(processor, sent[:100], tail_s=0.5))
    ests = [f.estimate for f in got if isinstance(f, AffectEstimateFrame)]
    gaps = np.diff([e["t"] for e in ests])
    assert len(ests) >= 3 and np.median(gaps) == pytest.approx(0.2, abs=0.01)
    assert all(e["status"]["voice"] == "off" and e["status"]["text"] == "off" for e in ests)
    messages = [f.data for f in got if isinstance(f, RTVIServerMessageFrame)]
    assert [m["type"] for m in messages] == ["affect.estimate"] * len(ests)
    assert [m["estimate"]["t"] for m in messages] == [e["t"] for e in ests]


def speech_pcm(seconds: float) -> np.ndarray:
    files = sorted(LIBRIVOX.glob("*.wav"))
    x = np.concatenate([read_speech(f, "int16") for f in files])
    return np.resize(x, int(seconds * 16000))


def test_words_expected_from_the_pipeline_and_never_seen_say_so(warnings):
    audio = speech_pcm(8.0)
    sent = [
        (i * 0.02, InputAudioRawFrame(audio[i * 320 : (i + 1) * 320].tobytes(), 16000, 1))
        for i in range(len(audio) // 320)
    ]
    processor = AffectProcessor(modalities=["voice", "text"])  # words="pipeline", no STT
    got = asyncio.run(run_pipeline(processor, sent, tail_s=0.5))
    ests = [f.estimate for f in got if isinstance(f, AffectEstimateFrame)]
    assert any(e["present"]["voice"] for e in ests)
    assert ests[-1]["status"]["text"] == f"missing: {NO_WORDS}"
    assert len([x for x in warnings if NO_WORDS in x]) == 1
    assert processor.rejected == 0


def test_interim_transcriptions_are_read_and_replaced_by_the_final():
    audio = speech_pcm(3.0)
    sent = [
        (i * 0.02, InputAudioRawFrame(audio[i * 320 : (i + 1) * 320].tobytes(), 16000, 1))
        for i in range(len(audio) // 320)
    ]
    sent += [
        (0.05, UserStartedSpeakingFrame()),
        (1.0, InterimTranscriptionFrame("he was", "u1", "t")),
        (1.6, InterimTranscriptionFrame("he was not an ill", "u1", "t")),
        (2.4, TranscriptionFrame(SPOKEN, "u1", "t")),
    ]
    sent.sort(key=lambda x: x[0])
    processor = AffectProcessor(modalities=["voice", "text"])
    got = asyncio.run(run_pipeline(processor, sent, tail_s=0.8))
    transcripts = [f.estimate["transcript"] for f in got if isinstance(f, AffectEstimateFrame)]
    # the hypothesis is read while it is spoken, each replaced by the next, then the final once
    seen = [t for i, t in enumerate(transcripts) if t and (i == 0 or t != transcripts[i - 1])]
    assert seen == ["he was", "he was not an ill", SPOKEN]


def test_audio_whose_declared_format_contradicts_its_timing_is_refused(warnings):
    """16 kHz speech labelled 48 kHz, then mono labelled 2 channels: the frames carry their
    pts (pipecat's clock), so they are sent at once and judged on those times."""
    audio = speech_pcm(3.0)
    pieces = [audio[i * 320 : (i + 1) * 320].tobytes() for i in range(len(audio) // 320)]

    def frames(rate: int, channels: int, start_s: float) -> list:
        out = []
        for i, b in enumerate(pieces):
            f = InputAudioRawFrame(b, rate, channels)
            f.pts = round((start_s + i * 0.02) * 1e9)
            out.append((0.0, f))
        return out

    for rate, channels, said, arrive in (
        (48000, 1, "declared 48000 Hz x 1 channel, but", 16000),
        (16000, 2, "or mono labelled 2 channels", 8000),  # or 8 kHz: timing cannot tell
    ):
        warnings.clear()
        processor = AffectProcessor(modalities=["voice"], words="off")
        asyncio.run(run_pipeline(processor, frames(rate, channels, 1.0), 0.3, paced=False))
        kind = "audio rate or channels contradict timing"
        # judged once 2 s of pts have passed: the rest of the 3 s is refused
        assert processor.rejected_by_kind == {kind: len(pieces) - 100}
        (line,) = [x for x in warnings if kind in x]
        assert said in line and f"{arrive} samples a second per channel arrive" in line


def test_the_readme_pipecat_example_runs(capsys):
    readme = (REPO / "README.md").read_text()
    section = readme.split("## In a pipecat pipeline", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    exec(compile(code, "README.md", "exec"), {"__name__": "__main__"})
    lines = [x for x in capsys.readouterr().out.splitlines() if " s " in x]
    times = [float(x.split()[0]) for x in lines]  # one line per estimate, in time order
    assert len(times) >= 2 and times == sorted(times)
    assert all(x.split()[2] in LABELS and "'face':" in x for x in lines)


def test_a_second_processor_shares_the_first_ones_models(video_rgb):
    """`models=first.models`, given before the first one's models have opened: the second
    takes them once they are open (no wait_models()) and opens none of its own."""
    sent, _ = user_frames(video_rgb)
    first = AffectProcessor(words="off")
    second = AffectProcessor(words="off", models=first.models)
    assert second.recognizer is None  # built when the pipeline sets it up

    async def both():
        return await asyncio.gather(
            run_pipeline(first, sent[:150], 0.5), run_pipeline(second, sent[:150], 0.5)
        )

    _, got = asyncio.run(both())
    mine, theirs = second.recognizer.stream.predictors, first.recognizer.stream.predictors
    assert {"face", "voice", "fusion"} <= set(mine)
    assert all(mine[m] is theirs[m] for m in ("face", "voice", "fusion"))
    ests = [f.estimate for f in got if isinstance(f, AffectEstimateFrame)]
    assert any(e["present"]["face"] for e in ests)
    assert AffectProcessor(words="off", models=second.models).models is second.models
