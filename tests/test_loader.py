import numpy as np
import torch

from tinylm.data.loader import BlockLoader, eval_batches


def test_each_block_once_per_epoch_in_a_new_order():
    tokens = np.arange(10 * 4 + 3, dtype=np.uint16)  # 10 blocks of 4, a tail of 3
    loader = BlockLoader(tokens, block_size=4, batch_size=3, seed=0)
    assert loader.batches_per_epoch == 4  # 3 + 3 + 3 + 1: the last batch is smaller
    epochs = []
    for _ in range(2):
        batches = [loader.next_batch() for _ in range(loader.batches_per_epoch)]
        assert [len(b) for b in batches] == [3, 3, 3, 1]
        blocks = torch.cat(batches)
        starts = blocks[:, 0].tolist()
        assert sorted(starts) == list(range(0, 40, 4))  # every block exactly once, tail unused
        assert torch.equal(blocks - blocks[:, :1], torch.arange(4).expand(10, 4))  # contiguous
        epochs.append(starts)
    assert epochs[0] != epochs[1]


def test_reference_study_batches_per_epoch():
    """2,473,387 blocks of 128: 77,294 batches of 32 and 154,587 of 16 (the study's numbers)."""
    tokens = np.broadcast_to(np.zeros(1, dtype=np.uint16), (2_473_387 * 128,))  # no memory
    assert BlockLoader(tokens, 128, 32, seed=0).batches_per_epoch == 77_294
    assert BlockLoader(tokens, 128, 16, seed=0).batches_per_epoch == 154_587


def test_position_state_resumes_the_same_stream():
    tokens = np.arange(200, dtype=np.uint16)
    a = BlockLoader(tokens, 8, 4, seed=3)
    for _ in range(9):  # into the second epoch
        a.next_batch()
    b = BlockLoader(tokens, 8, 4, seed=3)
    b.load_state_dict(a.state_dict())
    for _ in range(10):
        assert torch.equal(a.next_batch(), b.next_batch())


def test_eval_batches_cover_the_whole_split_in_order():
    tokens = np.arange(23, dtype=np.uint16)
    batches = list(eval_batches(tokens, block_size=5, batch_size=2))
    assert [tuple(b.shape) for b in batches] == [(2, 5), (2, 5), (1, 3)]
    assert torch.cat([b.flatten() for b in batches]).tolist() == list(range(23))
    assert len(list(eval_batches(tokens, 5, 2, max_batches=1))) == 1
