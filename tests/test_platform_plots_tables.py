"""Platform figure and W&B-table helpers."""
import math

import pytest
import torch

from normapps.platform.plots import new_figure, save_figure
from normapps.platform.summary import log_table, table_cell


class WandbLogger:  # the helpers recognise W&B's logger by its class name
    def __init__(self):
        self.images, self.logged = [], []
        self.experiment = self

    def log_image(self, key, images, **kw):
        self.images.append((key, images, kw))

    def log(self, data):
        self.logged.append(data)


def test_save_figure_writes_png_and_logs_to_wandb(tmp_path):
    fig = new_figure(width=4, height=3)
    fig.subplots().plot([0, 1, 2], [1, 0, 2])
    lg = WandbLogger()
    path = save_figure(fig, tmp_path / "run", "errors", loggers=[lg, object()], key="plots/errors")
    assert path == tmp_path / "run" / "errors.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert lg.images == [("plots/errors", [str(path)], {})]


def test_wandb_table_columns_never_mix_numbers_and_strings():
    # The rows the domain-adaptation runner used to log: a number in `severity` for the target
    # rows and an empty string in the mean row made wandb.Table raise TypeError (issue 12).
    wandb = pytest.importorskip("wandb")
    rows = [{"target": "contrast-5", "corruption": "contrast", "severity": 5, "none": 0.9},
            {"target": "inverted", "corruption": "", "severity": "", "none": 0.8},
            {"target": "mean", "none": 0.85, "tent": float("nan")}]
    with pytest.raises(TypeError):  # what happened before
        columns = list(rows[0])
        wandb.Table(columns=columns, data=[[r.get(c, "") for c in columns] for r in rows])
    lg = WandbLogger()
    log_table([lg], "da_results", rows)
    (logged,) = lg.logged
    table = logged["da_results"]
    assert isinstance(table, wandb.Table)
    assert table.columns == ["target", "corruption", "severity", "none", "tent"]
    assert table.data[1][2] is None and table.data[2][4] is None  # "" and NaN -> no value
    assert table.data[0][2] == 5 and table.data[2][3] == 0.85
    assert table_cell(torch.tensor(0.5)) == 0.5 and table_cell(math.inf) is None
    assert table_cell(True) == "True" and table_cell("x") == "x"
    log_table([object()], "x", rows)  # no W&B logger: nothing to do


def test_bar_panels_one_panel_per_entry_same_colour_per_series(tmp_path):
    from normapps.platform.plots import bar_panels
    from tests.helpers import assert_figure

    panels = [{"title": "A", "data": {"256 px": {"fp32": 2.0, "int8": 6.0}, "512 px": {"fp32": 0.5, "int8": 1.5}},
               "notes": {("256 px", "int8"): "3.00x"}, "ylabel": "images/s"},
              {"title": "B", "data": {"384 px": {"onnxruntime": 3.0, "fp32": 1.0}}, "log_y": True},
              {"title": "empty", "data": {}}]
    fig = bar_panels(panels, title="bench")
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["A", "B"]  # an empty panel is dropped
    colours = {ax.get_title(): [tuple(b.get_facecolor()) for b in ax.patches] for ax in visible}
    # bars series by series: A = fp32 x2, int8 x2; B = fp32, onnxruntime (series keep first-seen order)
    assert colours["A"][0] == colours["A"][1] == colours["B"][0]  # fp32: one colour in both panels
    assert len({colours["A"][0], colours["A"][2], colours["B"][1]}) == 3
    assert [t.get_text() for t in visible[0].texts] == ["3.00x"]
    assert visible[1].get_yscale() == "log"
    assert_figure(save_figure(fig, tmp_path, "bars"))
    with pytest.raises(ValueError, match="nothing to plot"):
        bar_panels([{"title": "x", "data": {}}])


def test_publish_table_writes_csv_and_markdown_and_logs_the_same_rows(tmp_path):
    """Every task records its tables through publish_table: one call, files + W&B."""
    pytest.importorskip("wandb")
    from normapps.platform.summary import publish_table

    rows = [{"stage": "trained", "acc": 0.9}, {"stage": "pruned", "acc": 0.8, "note": "x"}]
    lg = WandbLogger()
    csv_path, md_path = publish_table(tmp_path, [lg], "slimming", rows, key="slimming/stages")
    assert csv_path.read_text().splitlines() == ["stage,acc,note", "trained,0.9,", "pruned,0.8,x"]
    assert md_path.read_text().startswith("| stage | acc | note |")
    (logged,) = lg.logged
    assert logged["slimming/stages"].data == [["trained", 0.9, None], ["pruned", 0.8, "x"]]
