"""Tests of cifutils.plotting.animation: the per-layer positions of a flow and the animation
object with its two representations (a JavaScript player and a PNG strip)."""

import io
import re

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from IPython.core.formatters import DisplayFormatter  # noqa: E402

from cifutils import get_target  # noqa: E402
from cifutils.cif import CIFLayer, FixedIndex  # noqa: E402
from cifutils.exact import TwoGaussians1D, routing_cif  # noqa: E402
from cifutils.families import cif_nsf_family, nsf_family  # noqa: E402
from cifutils.plotting import (  # noqa: E402
    FlowAnimation,
    LayerPositions,
    animate_layers,
    layer_positions,
)

SMALL = dict(size=1.5, dpi=40, strip_size=1.0, strip_dpi=80)  # fast renders


@pytest.fixture(scope="module")
def nsf():
    torch.manual_seed(0)
    return nsf_family(2, layers=3, hidden=8, bins=4)


@pytest.fixture(scope="module")
def cif():
    torch.manual_seed(1)
    return cif_nsf_family(2, layers=2, hidden=8, bins=4, cif_hidden=(6,))


def test_nsf_positions_are_the_outputs_of_its_layers(nsf):
    pos = layer_positions(nsf, 7, seed=3)
    torch.manual_seed(3)
    with torch.no_grad():
        out = nsf.forward_sample(7)
    assert len(pos.states) == len(nsf.layers) + 1  # base, then every module (2 permutations)
    assert torch.equal(pos.states[0], out.w0)
    for layer, before, after in zip(nsf.layers, pos.states, pos.states[1:]):
        with torch.no_grad():
            assert torch.equal(after, layer(before)[0])
    assert torch.equal(pos.states[-1], out.z)
    # key frames: the base and the three spline layers, permutations folded in; two
    # reversals cancel, so the first frame is the base sample itself
    assert pos.labels == ["base $w_0$", "layer 1", "layer 2", "layer 3"]
    assert pos.frames.shape == (4, 7, 2)
    assert torch.equal(pos.frames[0], out.w0)
    assert torch.equal(pos.frames[1], pos.states[1])  # two reversals still to come
    assert torch.equal(pos.frames[2], pos.states[3].flip(-1))  # one reversal to come
    assert torch.equal(pos.frames[-1], out.z)
    assert pos.index is None and pos.us is None


def test_frames_are_drawn_in_the_output_coordinates():
    torch.manual_seed(0)
    flow = nsf_family(2, layers=2, hidden=8, bins=4)  # step, reversal, step
    pos = layer_positions(flow, 5, seed=0)
    assert torch.equal(pos.frames[0], pos.states[0].flip(-1))
    assert torch.equal(pos.frames[-1], pos.states[-1])


def test_cif_positions_match_forward_sample(cif):
    state = torch.get_rng_state()
    pos = layer_positions(cif, 6, seed=11)
    assert torch.equal(torch.get_rng_state(), state), "the global generator was used"
    torch.manual_seed(11)
    with torch.no_grad():
        out = cif.forward_sample(6)
    # base, [g(w), G(w; u)] for layer 1, the reversal, [g(w), G(w; u)] for layer 2
    assert len(pos.states) == 6
    assert torch.equal(pos.states[0], out.w0)
    cif_layers = [layer for layer in cif.layers if isinstance(layer, CIFLayer)]
    for i, (layer, step) in enumerate(zip(cif_layers, out.steps)):
        inner, output = pos.states[[1, 4][i]], pos.states[[2, 5][i]]
        assert torch.equal(output, step.z)
        with torch.no_grad():
            assert torch.equal(inner, layer.transform.flow(step.w)[0])
    assert torch.equal(pos.frames[0], out.w0.flip(-1))  # one reversal to come
    assert torch.equal(pos.frames[-1], out.z)
    assert len(pos.labels) == 5 and pos.labels[1] == "layer 1: $g$"
    unsplit = layer_positions(cif, 6, seed=11, split_cif=False)
    assert unsplit.labels == ["base $w_0$", "layer 1", "layer 2"]
    assert torch.equal(unsplit.frames[-1], out.z)


def test_fixed_indices_send_one_base_point_to_several_places():
    family = routing_cif(scale=0.3, shift=2.0, sharpness=5.0)
    us = [-1.0, 0.5, 2.0]
    pos = layer_positions(family, 4, us=us, seed=0)
    assert pos.frames.shape == (3, 12, 1) and pos.us == us
    assert torch.equal(pos.index, torch.tensor(us).repeat(4))
    base = pos.frames[0].reshape(4, 3)
    assert torch.equal(base, base[:, :1].expand(-1, 3))  # copies of the same base point
    layer = family.layers[0]
    for k, u in enumerate(us):
        expected, _ = FixedIndex(layer.transform, torch.tensor([u]))(base[:, :1])
        assert torch.allclose(pos.frames[-1].reshape(4, 3)[:, k], expected[:, 0])
    final = pos.frames[-1].reshape(4, 3)
    assert (final[:, 0] < 0).all() and (final[:, 2] > 0).all()  # the sign of u picks the mode


def _player_frames(html: str) -> int:
    return len(re.findall(r'frames\[\d+\] = "data:image/png;base64,', html))


def _strip_panels(png: bytes) -> tuple[int, int]:
    """Rows and columns of panels in a PNG strip, from the axes' frames: the pixel rows that
    hold the most long dark segments are the top and bottom spines of each row of panels."""
    image = plt.imread(io.BytesIO(png))
    dark = image[..., :3].max(axis=-1) < 0.5
    counts = []
    for line in dark:
        edges = np.diff(np.concatenate([[0], line.astype(int), [0]]))
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        counts.append(int(((ends - starts) >= 25).sum()))
    counts = np.array(counts)
    columns = counts.max()
    spine_rows = np.flatnonzero(counts == columns)
    blocks = 1 + int((np.diff(spine_rows) > 1).sum())
    return blocks // 2, int(columns)


def test_animation_carries_a_player_and_a_strip(nsf):
    pos = layer_positions(nsf, 50, seed=0)
    anim = animate_layers(pos, frames_per_layer=3, log_prob=get_target("banana").log_prob, **SMALL)
    assert isinstance(anim, FlowAnimation)
    assert anim.num_frames == 3 * 3 + 1 and anim.strip_shape == (1, 4)
    bundle, _ = DisplayFormatter().format(anim)
    assert {"text/html", "image/png", "text/plain"} <= set(bundle)
    html = bundle["text/html"]
    assert _player_frames(html) == anim.num_frames
    assert 'class="animation"' in html and "anim-slider" in html
    # offline and self-contained: no URL to fetch, no icon font; the first frame is the src
    assert "://" not in html and "font-awesome" not in html and "fa fa-" not in html
    assert re.search(r'<img id="_anim_img[0-9a-f]+" src="data:image/png;base64,', html)
    assert anim.png.startswith(b"\x89PNG\r\n\x1a\n")
    assert _strip_panels(anim.png) == (1, 4)
    again = animate_layers(pos, frames_per_layer=3, log_prob=get_target("banana").log_prob, **SMALL)
    assert again.html == anim.html and again.png == anim.png  # reproducible outputs
    assert repr(anim) == "<FlowAnimation: 10 frames, a strip of 1 x 4 key frames>"


def test_one_dimensional_panels_side_by_side(cif):
    torch.manual_seed(2)
    trained = cif_nsf_family(1, layers=1, hidden=8, bins=4, sigma0=2.0)
    panels = {
        "trained": layer_positions(trained, 3, us=[-1.0, 0.0, 1.0], seed=0),
        "hand-built": layer_positions(routing_cif(), 3, us=[-1.0, 1.0], seed=0),
    }
    anim = animate_layers(panels, frames_per_layer=2, log_prob=TwoGaussians1D(), **SMALL)
    assert anim.num_frames == 2 * 2 + 1 and anim.strip_shape == (2, 3)
    assert _player_frames(anim.html) == anim.num_frames
    assert _strip_panels(anim.png) == (2, 3)
    assert anim._repr_png_() == anim.png and anim._repr_html_() == anim.html


@pytest.mark.parametrize("frames", [0, -1, 2.5, True])
def test_animation_rejects_a_bad_number_of_frames(nsf, frames):
    pos = layer_positions(nsf, 5)
    with pytest.raises(ValueError, match="frames_per_layer"):
        animate_layers(pos, frames_per_layer=frames)


def test_bad_input_is_named(nsf, cif):
    with pytest.raises(ValueError, match="num_samples"):
        layer_positions(nsf, 0)
    with pytest.raises(ValueError, match="us is only for families with CIF layers"):
        layer_positions(nsf, 3, us=[0.0])
    with pytest.raises(ValueError, match="us must be a non-empty"):
        layer_positions(cif, 3, us=[])
    with pytest.raises(ValueError, match="seed"):
        layer_positions(cif, 3, seed=1.5)
    with pytest.raises(ValueError, match="positions"):
        animate_layers({})
    with pytest.raises(ValueError, match="positions"):
        animate_layers(torch.zeros(3, 4, 2))
    with pytest.raises(ValueError, match="key frames"):
        animate_layers({"a": layer_positions(nsf, 3), "b": layer_positions(cif, 3)})
    torch.manual_seed(0)
    two_d = layer_positions(nsf_family(2, layers=2, hidden=8, bins=4), 3)  # 3 key frames
    with pytest.raises(ValueError, match="different dimensions"):
        animate_layers({"a": two_d, "b": layer_positions(routing_cif(), 3)})
    with pytest.raises(ValueError, match="dpi"):
        animate_layers(layer_positions(nsf, 3), dpi=0)
    three = LayerPositions(torch.zeros(2, 4, 3), ["a", "b"], [])
    with pytest.raises(ValueError, match="dimension 3"):
        animate_layers(three)
