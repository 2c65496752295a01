import numpy as np
import pytest
import torch

from tinylm.data.dataset import TokenArray
from tinylm.data.loader import BlockLoader, eval_batches
from tinylm.errors import TinyLMError


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


def test_reference_study_block_count():
    """316,593,536 tokens cut into blocks of 128 are the study's 2,473,387 blocks per epoch."""
    tokens = np.broadcast_to(np.zeros(1, dtype=np.uint16), (316_593_536,))  # no memory
    loader = BlockLoader(tokens, 128, 32, seed=0)
    assert loader.num_blocks == 2_473_387 and loader.batches_per_epoch == 77_294


def epoch_starts_of(loader):
    return torch.cat([loader.next_batch() for _ in range(loader.batches_per_epoch)])[:, 0]


def test_ranks_read_disjoint_equal_parts_that_cover_the_epoch():
    tokens = np.arange(50 * 4 + 1, dtype=np.uint16)  # 50 blocks of 4
    for world in (1, 2, 3):
        loaders = [
            BlockLoader(tokens, 4, 5, seed=1, rank=r, world_size=world) for r in range(world)
        ]
        for _epoch in range(2):
            parts = [set(epoch_starts_of(ld).tolist()) for ld in loaders]
            assert len({len(p) for p in parts}) == 1  # equal shares: ranks stay in step
            union = set().union(*parts)
            assert sum(len(p) for p in parts) == len(union)  # disjoint
            assert len(union) == 50 - 50 % world and union <= set(range(0, 200, 4))


def test_random_windows_are_seeded_and_resumable():
    tokens = np.arange(1000, dtype=np.uint16)
    a = BlockLoader(tokens, 10, 4, seed=5, sampling="random")
    first = a.next_batch()
    assert torch.equal(first - first[:, :1], torch.arange(10).expand(4, 10))  # contiguous
    assert first[:, 0].remainder(10).any()  # not aligned to blocks
    b = BlockLoader(tokens, 10, 4, seed=5, sampling="random")
    b.load_state_dict(a.state_dict())
    for _ in range(30):  # across epochs
        assert torch.equal(a.next_batch(), b.next_batch())


def test_resume_refuses_other_data_or_shape():
    state = BlockLoader(np.arange(200, dtype=np.uint16), 8, 4, seed=3).state_dict()
    with pytest.raises(TinyLMError, match="num_blocks is 25, this run's is 12"):
        BlockLoader(np.arange(100, dtype=np.uint16), 8, 4, seed=3).load_state_dict(state)


def test_blocks_cross_shard_boundaries_in_a_token_array():
    shards = [np.arange(0, 7, dtype=np.uint16), np.arange(7, 20, dtype=np.uint16)]
    tokens = TokenArray(shards, np.dtype("<u2"))
    loader = BlockLoader(tokens, 5, 4, seed=0)
    blocks = loader.next_batch()
    assert sorted(blocks[:, 0].tolist()) == [0, 5, 10, 15]
    assert torch.equal(blocks - blocks[:, :1], torch.arange(5).expand(4, 5))
    assert torch.cat(list(eval_batches(tokens, 5, 3))).flatten().tolist() == list(range(20))


def test_prefetcher_gives_the_loaders_stream_and_position():
    """Read ahead in a thread, the batches and the saved position are the plain loader's;
    a position moved under it (a resume) drops the batch read ahead."""
    from tinylm.data.loader import Prefetcher

    tokens = np.arange(40 * 4, dtype=np.uint16)  # 40 blocks of 4: 4 batches of 10 per epoch
    plain = BlockLoader(tokens, 4, 10, seed=5)
    ahead = Prefetcher(BlockLoader(tokens, 4, 10, seed=5), torch.device("cpu"))
    try:
        for _ in range(6):  # across an epoch end
            assert torch.equal(ahead.next_batch(), plain.next_batch())
            assert ahead.loader.state_dict() == plain.state_dict()
        state = BlockLoader(tokens, 4, 10, seed=5)
        for _ in range(2):
            state.next_batch()
        ahead.loader.load_state_dict(state.state_dict())  # back to batch 2 of epoch 0
        assert torch.equal(ahead.next_batch(), state.next_batch())
    finally:
        ahead.close()


@pytest.mark.parametrize("n_tokens", [40 * 4 + 3, 23 * 4 + 3, 24 * 4 + 3, 10 * 4 + 1])
@pytest.mark.parametrize("max_batches", [0, 1, 3])
def test_eval_prefix_holds_what_the_first_batches_read(n_tokens, max_batches):
    """Evaluation may run the first max_batches batches in any batch size: the prefix holds
    exactly their tokens (the tail only where eval_batches reaches it)."""
    from tinylm.data.loader import eval_prefix

    tokens = np.arange(n_tokens, dtype=np.uint16)
    want = torch.cat([b.flatten() for b in eval_batches(tokens, 4, 8, max_batches)])
    prefix = eval_prefix(tokens, 4, 8, max_batches)
    for batch_size in (1, 5, 100):
        got = torch.cat([b.flatten() for b in eval_batches(prefix, 4, batch_size)])
        assert torch.equal(got, want)
