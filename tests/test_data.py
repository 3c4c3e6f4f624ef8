import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from robustprec.config import DataConfig
from robustprec.data.batches import BatchStream, eval_sequences, split_tokens
from robustprec.data.corpus import load_corpus, stdlib_files
from robustprec.data.tokenizer import ByteTokenizer, load_tokenizer
from robustprec.errors import DataError

BYTE = ByteTokenizer()


def test_embedded_corpus_is_deterministic_cached_and_offline(tmp_path):
    cfg = DataConfig(embedded_max_bytes=200_000, cache_dir=str(tmp_path))
    a = load_corpus(cfg, BYTE)
    files = stdlib_files(200_000)
    expected = b"".join(f.read_bytes() + b"\x00" for f in files)
    assert len(a) == len(expected)
    assert bytes(np.asarray(a.tokens, dtype=np.uint8)) == expected
    assert len(list(tmp_path.glob("*.bin"))) == 1
    b = load_corpus(cfg, BYTE)  # served from the cache, same content hash
    assert a.fingerprint == b.fingerprint and np.array_equal(a.tokens, b.tokens)
    assert "standard library" in a.source


def test_text_file_and_folder(tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "b.txt").write_bytes(b"bravo")
    (tmp_path / "d" / "sub" / "a.txt").write_bytes(b"alpha")
    (tmp_path / "d" / ".hidden").write_bytes(b"nope")
    cache = str(tmp_path / "cache")
    folder = load_corpus(DataConfig(path=str(tmp_path / "d"), cache_dir=cache), BYTE)
    assert (
        bytes(np.asarray(folder.tokens, dtype=np.uint8)) == b"bravo\x00alpha\x00"
    )  # sorted by relative path
    single = load_corpus(DataConfig(path=str(tmp_path / "d" / "b.txt"), cache_dir=cache), BYTE)
    assert bytes(np.asarray(single.tokens, dtype=np.uint8)) == b"bravo\x00"


def test_parquet_text_column_streamed(tmp_path):
    texts = [f"document number {i} " * (i % 7 + 1) for i in range(3000)]
    pq.write_table(
        pa.table({"id": list(range(3000)), "text": texts}), tmp_path / "c.parquet", row_group_size=500
    )
    corpus = load_corpus(
        DataConfig(path=str(tmp_path / "c.parquet"), cache_dir=str(tmp_path / "cache")), BYTE
    )
    assert bytes(np.asarray(corpus.tokens, dtype=np.uint8)) == b"".join(t.encode() + b"\x00" for t in texts)


def test_parquet_without_text_column_is_a_clear_error(tmp_path):
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "c.parquet")
    with pytest.raises(DataError, match="no 'text' column \\(columns: body\\)"):
        load_corpus(DataConfig(path=str(tmp_path / "c.parquet"), cache_dir=str(tmp_path)), BYTE)


@pytest.mark.parametrize("dtype", ["uint16", "uint32"])
def test_pretokenized_bin(tmp_path, dtype):
    arr = np.arange(1000, dtype=dtype) * 7
    (tmp_path / "t.bin").write_bytes(arr.tobytes())
    corpus = load_corpus(DataConfig(path=str(tmp_path / "t.bin"), bin_dtype=dtype), BYTE)
    assert np.array_equal(corpus.tokens, arr)


def test_missing_and_empty_inputs(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_corpus(DataConfig(path=str(tmp_path / "missing.txt")), BYTE)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty"):
        load_corpus(DataConfig(path=str(tmp_path / "empty")), BYTE)
    (tmp_path / "e.txt").write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        load_corpus(DataConfig(path=str(tmp_path / "e.txt"), cache_dir=str(tmp_path / "c")), BYTE)
    (tmp_path / "odd.bin").write_bytes(b"abc")
    with pytest.raises(DataError, match="whole number"):
        load_corpus(DataConfig(path=str(tmp_path / "odd.bin")), BYTE)


def test_hf_tokenizer_json(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(
        ["the quick brown fox jumps"] * 50,
        trainers.BpeTrainer(vocab_size=60, special_tokens=["[UNK]", "</s>"]),
    )
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    t = load_tokenizer(str(path))
    assert t.eot_id == tok.token_to_id("</s>")
    (tmp_path / "c.txt").write_text("the quick fox")
    corpus = load_corpus(
        DataConfig(path=str(tmp_path / "c.txt"), tokenizer=str(path), cache_dir=str(tmp_path / "c")), t
    )
    assert corpus.tokens.tolist() == [*tok.encode("the quick fox").ids, t.eot_id]
    with pytest.raises(DataError, match="not found"):
        load_tokenizer(str(tmp_path / "nope.json"))


def test_split_is_disjoint_and_checked():
    tokens = np.arange(10_000)
    train, held = split_tokens(tokens, 0.1, 64)
    assert len(train) + len(held) == len(tokens)
    assert set(train.tolist()).isdisjoint(held.tolist())
    with pytest.raises(DataError, match="too small"):
        split_tokens(np.arange(100), 0.1, 64)


def test_batches_deterministic_by_seed_and_cover_each_epoch():
    tokens = np.arange(64 * 50 + 1)
    a, b, c = (BatchStream(tokens, 64, 10, s) for s in (1, 1, 2))
    assert np.array_equal(a.global_batch_at(3), b.global_batch_at(3))
    assert not np.array_equal(a.global_batch_at(0), c.global_batch_at(0))
    starts = np.concatenate([a.global_batch_at(s)[:, 0] for s in range(5)])  # 5 steps x 10 = one epoch of 50
    assert sorted(starts.tolist()) == [i * 64 for i in range(50)]
    x = a.global_batch_at(0)
    assert np.array_equal(x[:, 1:], x[:, :-1] + 1)  # contiguous windows of seq_len + 1


@pytest.mark.parametrize(("world", "micro"), [(1, 12), (1, 4), (2, 2), (3, 4), (4, 3)])
def test_global_batch_is_identical_for_any_worker_count(world, micro):
    stream = BatchStream(np.arange(32 * 200 + 1), 32, 12, seed=7)
    for step in (0, 5, 17):
        parts = [mb for r in range(world) for mb in stream.micro_batches(step, r, world, micro)]
        assert np.array_equal(np.concatenate(parts), stream.global_batch_at(step))


def test_bad_geometry_and_eval_set():
    stream = BatchStream(np.arange(1000), 10, 12, 0)
    with pytest.raises(DataError, match="cannot be split"):
        stream.micro_batches(0, 0, 5, 1)
    ev = eval_sequences(np.arange(100), 10, 50)
    assert ev.shape == (9, 11) and ev[1, 0] == 10
