"""The reference presets do not move: seed-d128/seed-d256 logits pinned before issue 14.

The values below were computed with the model of main at ef6b082 (before model components
became configurable) by: torch.manual_seed(1337); GPT(preset).eval() on tokens
torch.randint(50257, (2, 32), generator=torch.Generator().manual_seed(0)). A change to the
reference family's initialisation order, its parameter names or its forward pass moves them.
"""

import torch

from tinylm.config import MODEL_PRESETS
from tinylm.model import GPT

PINNED = {
    "seed-d128": {
        "num_parameters": 13278976,
        "first": [
            [
                0.021093562245368958,
                -0.2404567003250122,
                0.2851274609565735,
                0.014532946050167084,
                0.11198505759239197,
            ],
            [
                -0.06824082881212234,
                -0.0975765511393547,
                0.4241882860660553,
                -0.10215044766664505,
                0.15175826847553253,
            ],
            [
                0.6700083017349243,
                -0.5041816234588623,
                0.35670626163482666,
                -0.022000376135110855,
                0.3414398729801178,
            ],
        ],
        "last": [
            -0.0466490313410759,
            0.47803795337677,
            -0.060730043798685074,
            0.3374975025653839,
            -0.09991202503442764,
        ],
        "row_sums": [
            11.37599937852201,
            69.96217808897791,
            37.67864384156155,
            82.9063388950226,
            77.29696919472326,
            58.97608301113905,
            16.58061724623758,
            15.176032555345785,
        ],
        "abs_mean": 0.18028288505968967,
        "at_targets": [
            0.02951938286423683,
            -0.06751777231693268,
            -0.35279610753059387,
            -0.31532540917396545,
            0.02573688142001629,
            0.2429821491241455,
            0.5286442637443542,
            -0.1556132584810257,
        ],
    },
    "seed-d256": {
        "num_parameters": 27344384,
        "first": [
            [
                0.09789172559976578,
                0.2723660171031952,
                0.4238099455833435,
                0.19735386967658997,
                0.44690996408462524,
            ],
            [
                -0.3236377537250519,
                -0.23767133057117462,
                0.46511757373809814,
                0.2011147141456604,
                0.35003408789634705,
            ],
            [
                -0.5359364748001099,
                0.014869704842567444,
                0.10546575486660004,
                0.2201835662126541,
                0.5515339374542236,
            ],
        ],
        "last": [
            0.047336507588624954,
            0.24719208478927612,
            0.4238322377204895,
            0.10476218163967133,
            -0.11814939975738525,
        ],
        "row_sums": [
            -66.71472144243307,
            -87.71705753769493,
            -68.38508218422066,
            -60.56408508028835,
            -128.61450584721752,
            -142.97161870021955,
            -23.27576409536414,
            -36.3607102901442,
        ],
        "abs_mean": 0.2548978139715781,
        "at_targets": [
            0.209758922457695,
            -0.4448898732662201,
            -0.5798550248146057,
            0.03813107684254646,
            -0.14248129725456238,
            0.3270450830459595,
            0.35026413202285767,
            0.36595475673675537,
        ],
    },
}


def _logits(name: str) -> tuple[GPT, torch.Tensor, torch.Tensor]:
    torch.manual_seed(1337)
    model = GPT(MODEL_PRESETS[name]).eval()
    idx = torch.randint(50257, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model, idx, model(idx).double()


def test_reference_presets_keep_their_parameter_counts_and_logits():
    for name, pin in PINNED.items():
        model, idx, logits = _logits(name)
        assert model.num_parameters() == pin["num_parameters"], name
        got = {
            "first": logits[0, :3, :5],
            "last": logits[1, -1, -5:],
            "row_sums": logits[0].sum(-1)[:8],
            "abs_mean": logits.abs().mean(),
            "at_targets": logits[1, torch.arange(31), idx[1, 1:]][:8],
        }
        for key, value in got.items():
            expected = torch.tensor(pin[key], dtype=torch.float64)
            # row sums add 50,257 fp32 logits: allow for summation-order differences
            tol = 1e-3 if key == "row_sums" else 1e-5
            assert torch.allclose(value, expected, atol=tol, rtol=0), (name, key)
