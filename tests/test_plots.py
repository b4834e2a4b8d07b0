"""Figures: error bars are the tables' t-intervals, and the same data draw the same picture."""

import io

import matplotlib

matplotlib.use("Agg")

import pandas as pd
import pytest

from sepo import plots
from sepo.stats import t_interval


def test_t_errorbar_is_the_t_interval_over_seeds():
    values = [0.2, 0.5, 0.35]
    _, low, high = t_interval(values)
    assert plots.t_errorbar(values) == pytest.approx((low, high))
    assert plots.t_errorbar([0.4]) == (0.4, 0.4)  # one seed: no bar


def test_bar_and_line_figures_are_deterministic():
    # five seeds per group: enough for seaborn's bootstrapped ("ci", 95) bars to differ between two draws
    frame = pd.DataFrame({"method": ["a"] * 5 + ["b"] * 5, "k": [0.1, 0.3, 1.0, 0.1, 0.3] * 2,
                          "win_rate": [0.2, 0.5, 0.35, 0.41, 0.27, 0.6, 0.7, 0.55, 0.52, 0.66]})

    def png(make) -> bytes:
        buffer = io.BytesIO()
        fig = make()
        fig.savefig(buffer, format="png")
        matplotlib.pyplot.close(fig)
        return buffer.getvalue()

    assert png(lambda: plots.bars(frame, "method", "win_rate")) == png(lambda: plots.bars(frame, "method", "win_rate"))
    assert png(lambda: plots.lines(frame, "k", "win_rate", hue="method")) == png(
        lambda: plots.lines(frame, "k", "win_rate", hue="method"))
