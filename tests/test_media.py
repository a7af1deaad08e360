"""Video files a person opens: mp4 (H.264) and GIF written whole, and videos in TensorBoard without moviepy."""
import io

import numpy as np
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tools.core.logger import RunLogger
from tools.core.media import gif_bytes, read_mp4, tile_videos, to_uint8_frames, write_gif, write_mp4


def _video(frames=6, height=17, width=24):
    ramp = np.linspace(0, 255, width, dtype=np.float64)
    return np.stack([np.broadcast_to(((ramp + 30 * t) % 256)[None, :, None], (height, width, 3))
                     for t in range(frames)]).astype(np.uint8)


def test_mp4_round_trip_keeps_frames_and_content(tmp_path):
    video = _video()
    write_mp4(video, tmp_path / "v.mp4", fps=8)
    decoded = read_mp4(tmp_path / "v.mp4")
    assert decoded.shape == (6, 18, 24, 3), "odd heights are padded to even for yuv420p"
    assert np.abs(decoded[:, :17].astype(int) - video.astype(int)).mean() < 6
    assert [p.name for p in tmp_path.iterdir()] == ["v.mp4"], "no temporary file left"


def test_gif_and_tiles(tmp_path):
    frames = to_uint8_frames(torch.rand(4, 3, 8, 8) * 2 - 1)
    assert frames.shape == (4, 8, 8, 3) and frames.dtype == np.uint8
    grid = tile_videos([frames, frames, frames], columns=2, gap=2)
    assert grid.shape == (4, 18, 18, 3) and (grid[:, 8:10] == 255).all()
    write_gif(grid, tmp_path / "g.gif")
    with Image.open(tmp_path / "g.gif") as image:
        assert image.n_frames == 4 and image.size == (18, 18)
    assert Image.open(io.BytesIO(gif_bytes(frames))).n_frames == 4


def test_logger_writes_a_video_summary(tmp_path):
    logger = RunLogger(tmp_path)
    logger.log_video("stage/video", torch.rand(5, 3, 16, 20), step=3)
    logger.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    image = events.Images("stage/video")[0]
    assert image.step == 3 and (image.width, image.height) == (20, 16)
    assert Image.open(io.BytesIO(image.encoded_image_string)).n_frames == 5
