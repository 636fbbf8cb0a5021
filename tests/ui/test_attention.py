"""Attention figures: one visible heatmap at a time, a dropdown over layer × head, token tick labels, bounded size."""
import json

import torch
from torch import nn

from bigmodel_nb.engine.inspect.attention import attention
from bigmodel_nb.ui.attention import attention_figure, heads_figure


def encoder_maps(tokens=12, layers=2):
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
    model = nn.Sequential(nn.Embedding(10, 16), nn.TransformerEncoder(layer, layers, enable_nested_tensor=False))
    return attention(model, torch.arange(tokens) % 10)


def test_dropdown_switches_between_every_layer_and_head():
    maps = encoder_maps()
    fig = attention_figure(maps, layer=1, head=1)
    assert len(fig.data) == 4 and [t.visible for t in fig.data] == [False, False, False, True]
    buttons = fig.layout.updatemenus[0].buttons
    assert [b.label for b in buttons] == ["layer 0 · head 0", "layer 0 · head 1",
                                          "layer 1 · head 0", "layer 1 · head 1"]
    assert buttons[2].args[0]["visible"] == [False, False, True, False]
    assert fig.layout.updatemenus[0].active == 3
    # repeated tokens keep their own columns: numeric positions, token text on the ticks
    assert list(fig.layout.xaxis.tickvals) == list(range(12)) and list(fig.layout.xaxis.ticktext) == maps.tokens
    assert torch.allclose(torch.tensor(fig.data[3].z), maps.weights(1)[1])


def test_heads_grid_has_one_map_per_head():
    maps = encoder_maps()
    fig = heads_figure(maps, layer=0)
    assert len(fig.data) == 2 and [a.text for a in fig.layout.annotations] == ["head 0", "head 1"]


def test_figure_json_stays_small_for_a_long_input():
    maps = encoder_maps(tokens=200, layers=8)
    size = len(json.dumps(attention_figure(maps).to_plotly_json(), default=str))
    values = sum(m.numel() for m in maps.maps.values())
    assert values <= 40_000 and size < 300_000, (values, size)
