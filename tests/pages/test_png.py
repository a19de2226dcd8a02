"""headwise explain --png: the PNG views hold the report's numbers, tokens and titles, and the CLI's choice
of source and output is checked before anything runs.

Shape legend: L layers, H heads, Nq / Nk query and key tokens.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("matplotlib")
pytest.importorskip("rich")

from matplotlib import image as mpimg
from matplotlib import pyplot as plt

from headwise.cli.main import main
from headwise.explain.by_hand import by_hand_report
from headwise.explain.example import Example, run_example
from headwise.explain.walkthrough import lecture_report
from headwise.pages.model import HeadMaps
from headwise.pages.png import _map_figure, _model_view_figure, _step_figure, write_pngs


@pytest.fixture(scope="module")
def lecture():
    return lecture_report(run_example(Example()))


def test_a_head_map_shows_its_weights_tokens_and_title(lecture):
    maps = lecture.attention[0]  # (1, 2, 6, 6): one layer of two heads
    figure = _map_figure(maps, layer=0, head=1)
    axis = figure.axes[0]
    assert torch.equal(torch.as_tensor(axis.images[0].get_array().data), maps.weights[0, 1])
    assert [t.get_text() for t in axis.get_yticklabels()] == list(maps.query_tokens)
    assert [t.get_text() for t in axis.get_xticklabels()] == list(maps.key_tokens)
    assert axis.get_title() == "self-attention: layer 0, head 1"
    printed = {t.get_text() for t in axis.texts}  # small maps print their numbers
    assert f"{maps.weights[0, 1, 1, 0].item():.2f}" in printed
    assert len(figure.axes) == 2  # the map and its colour bar
    plt.close(figure)


def test_long_sequences_thin_their_labels():
    tokens = tuple(f"t{i}" for i in range(200))
    maps = HeadMaps("self-attention", tokens, tokens, torch.rand(1, 1, 200, 200, dtype=torch.float64))
    figure = _map_figure(maps, 0, 0)
    labels = [t.get_text() for t in figure.axes[0].get_yticklabels()]
    assert labels == [f"t{i}" for i in range(0, 200, 4)] and not figure.axes[0].texts
    plt.close(figure)


def test_a_step_shows_one_heatmap_per_head_with_masked_cells_printed(lecture):
    step = next(s for s in lecture.steps if s.name == "masked_scores")
    figure = _step_figure(step)
    maps = [axis for axis in figure.axes if axis.images and axis.get_title().startswith("head")]
    assert [axis.get_title() for axis in maps] == ["head 0", "head 1"]
    assert "-inf" in {t.get_text() for t in maps[0].texts}
    assert "masked_scores" in figure.get_suptitle() and "(B, H, Nq, Nk)" in figure.get_suptitle()
    plt.close(figure)


def test_the_model_view_has_a_cell_per_layer_and_head():
    weights = torch.rand(3, 4, 5, 5, dtype=torch.float64).softmax(dim=-1)  # (L, H, Nq, Nk)
    tokens = tuple("abcde")
    figure = _model_view_figure(HeadMaps("cross-attention", tokens, tokens, weights))
    cells = [axis for axis in figure.axes if axis.images]
    assert len(cells) == 12
    assert torch.allclose(torch.as_tensor(cells[5].images[0].get_array().data), weights[1, 1])
    plt.close(figure)


@pytest.mark.slow
def test_write_pngs_writes_every_view(tmp_path):
    files = write_pngs(by_hand_report(), tmp_path)
    names = sorted(path.name for path in files)
    assert len(names) == 9 + 2 * 2  # 9 steps; two maps (by hand, exact) × (one head + the model view)
    assert (
        "weights-a-by-hand-layer0-head0.png" in names
        and "step-01-inputs-x-6-4-and-the-weights-w-q-w-k-w-v-3-6.png" in names
    )
    picture = mpimg.imread(tmp_path / "weights-a-layer0-head0.png")  # (rows, columns, RGBA)
    assert picture.shape[0] > 200 and picture.std() > 0.05  # drawn, not blank


@pytest.mark.slow
def test_cli_writes_pngs_and_checks_its_options(tmp_path, capsys):
    assert main(["explain", "--png", str(tmp_path / "pictures")]) == 0
    assert "wrote 24 PNG files" in capsys.readouterr().out  # 21 steps, two heads, the model view
    for arguments, message in [
        (["--model", "minilm", "--png", "x"], "--model needs TEXT"),
        (["--model", "minilm", "a cat", "--token", "cat", "--png", "y"], "leave out --html and --png"),
        (["--by-hand", "--heads", "3"], "--by-hand replaces the lectures' example; leave out --heads"),
        (["a cat"], "TEXT ('a cat') is read by --model or --checkpoint only"),
        (["--by-hand", "--model", "minilm", "x", "--png", "y"], "not allowed with argument"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(["explain", *arguments])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


def test_user_text_is_never_read_as_math(tmp_path):
    tokens = ("a", "$\\foo{$", "$x^2$")
    weights = torch.full((1, 1, 3, 3), 1 / 3, dtype=torch.float64)
    figure = _map_figure(HeadMaps("self-attention", tokens, tokens, weights), 0, 0)
    figure.savefig(tmp_path / "math.png")  # matplotlib would fail to parse "$\foo{$" as mathtext
    assert [t.get_text() for t in figure.axes[0].get_xticklabels()] == list(tokens)
    plt.close(figure)


def test_a_fifo_or_a_folder_where_a_picture_goes_is_refused(tmp_path, lecture):
    """A FIFO in the --png folder would block a writer that opens it (until someone reads it): the files
    are written beside their place and renamed, and what is not a regular file is refused, as --html does."""
    folder = tmp_path / "pictures"
    folder.mkdir()
    os.mkfifo(folder / "step-01-inputs.png")
    result = subprocess.run(
        [sys.executable, "-m", "headwise.cli.main", "explain", "--png", str(folder)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=120,  # a writer blocked on the FIFO fails here
        check=False,
    )
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == (
        f"headwise explain: {folder / 'step-01-inputs.png'} is a FIFO (named pipe): headwise writes regular "
        "files only\n"
    )
    os.remove(folder / "step-01-inputs.png")
    (folder / "step-01-inputs.png").mkdir()
    with pytest.raises(
        IsADirectoryError, match=r"step-01-inputs\.png is a directory: give the name of a file"
    ):
        write_pngs(lecture, folder)
    assert sorted(path.name for path in folder.iterdir()) == ["step-01-inputs.png"]  # nothing left behind


def test_pictures_use_the_page_s_colours_and_one_scale_per_step(lecture):
    """Blue (white to blue, or blue-white-red around 0) as on the page; the heads of a step (and the hand-made
    and exact panels) on one scale; -inf grey, never the white of a tiny weight; "1 layer", not "1 layers"."""
    step = next(s for s in lecture.steps if s.name == "masked_scores")  # signed scores and -inf
    figure = _step_figure(step)
    images = [axis.images[0] for axis in figure.axes if axis.images and axis.get_title().startswith("head")]
    assert len(images) == 2 and images[0].norm.vmin == images[1].norm.vmin == -images[0].norm.vmax
    assert images[0].cmap.name.startswith("RdBu_r")
    assert images[0].cmap(float("nan")) == pytest.approx((200 / 255, 200 / 255, 200 / 255, 1.0))
    highest = max(m.values[m.values.isfinite()].abs().max().item() for m in step.matrices)
    assert images[0].norm.vmax == highest  # the larger head's reach, for both
    plt.close(figure)
    weights = _step_figure(next(s for s in lecture.steps if s.name == "weights"))
    image = next(axis.images[0] for axis in weights.axes if axis.images)
    assert image.cmap.name.startswith("Blues") and image.norm.vmin == 0
    assert image.cmap(image.norm(1e-9)) != image.cmap(float("nan"))  # a tiny weight is not drawn as masked
    plt.close(weights)
    model = _model_view_figure(lecture.attention[0])
    assert model.get_suptitle() == "self-attention: 1 layer × 2 heads"
    plt.close(model)
