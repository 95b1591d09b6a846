"""nada_ops.io: the validation layer for untrusted tensors, bounded descriptions, the
bounded unpickler and the torch-file / safetensors / .npy readers (unit level; the
hostile-file end-to-end test is test_hostile_files.py)."""
from __future__ import annotations

import argparse
import io
import os
import pickle
import time

import numpy as np
import pytest
import torch

from conftest import randomize, tiny_config
from nada_ops.io.budget import ReadBudget
from nada_ops.io.errors import UntrustedFileError, describe
from nada_ops.io.numpy_files import read_npy
from nada_ops.io.pickles import AllowList, BoundedUnpickler, PickleRefusedError, run_unpickler
from nada_ops.io.safetensors_files import loads_json, read_safetensors
from nada_ops.io.tensors import check_geometry
from nada_ops.io.torch_files import read_torch_file, torch_allow_list
from nada_ops.stylegan.io import load_generator, save_generator
from nada_ops.stylegan.networks import Generator, z_from_seeds


def test_describe_is_bounded_for_shared_nesting_and_huge_atoms():
    a = []
    for _ in range(200):          # repr(a) would have 2^200 parts
        a = [a, a]
    t = ()
    for _ in range(200):
        t = (t, t)
    for obj in (a, t, {"k": a}, "x" * 10 ** 7, b"y" * 10 ** 7, 7 ** 100000, torch.zeros(3, 4)):
        start = time.perf_counter()
        s = describe(obj, 80)
        assert time.perf_counter() - start < 0.1 and len(s) < 400, s


@pytest.mark.parametrize("size,stride,offset,numel,ok", [
    ((4, 5), (5, 1), 0, 20, True),          # contiguous
    ((5, 4), (1, 5), 0, 20, True),          # transposed
    ((2, 3), (5, 1), 7, 20, True),          # a slice with gaps (non-dense, non-overlapping)
    ((4, 5), (5, 1), 1, 20, False),         # one element past the end
    ((30000, 30000), (0, 0), 0, 1, False),  # expand
    ((100, 100), (1, 1), 0, 1000, False),   # overlapping
    ((0, 10 ** 9), (1, 1), 0, 0, True),     # empty
    ((10 ** 13,), (1,), 0, 10 ** 13, False),  # a dimension beyond 2^40
    ((True, 2), (2, 1), 0, 4, False),       # bool is not a size
])
def test_check_geometry(size, stride, offset, numel, ok):
    if ok:
        check_geometry(size, stride, offset, numel, "t", "f.pt")
    else:
        with pytest.raises(UntrustedFileError, match="f.pt"):
            check_geometry(size, stride, offset, numel, "t", "f.pt")


def test_torch_reader_matches_torch_load(tmp_path):
    """Zip and legacy formats, views (transposed, sliced, fp16), parameters, Namespace, optimizer state."""
    m = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(m.parameters())
    m(torch.randn(1, 3)).sum().backward()
    opt.step()
    base = torch.arange(24.0)
    obj = {"sd": m.state_dict(), "p": torch.nn.Parameter(torch.ones(2)), "args": argparse.Namespace(a=1, b="x"),
           "opt": opt.state_dict(), "half": base.half()[3:9], "t": base.view(4, 6).t(), "slice": base.view(4, 6)[:, ::2],
           "set": {1, "a"}, "int": torch.arange(5), "bool": torch.tensor([True, False])}
    allow = AllowList().new("argparse", "Namespace", argparse.Namespace)
    for new in (True, False):
        p = tmp_path / f"x{new}.pt"
        torch.save(obj, p, _use_new_zipfile_serialization=new)
        ours, ref = read_torch_file(p, allow=allow), torch.load(p, weights_only=False)
        assert ours["args"] == ref["args"] and ours["set"] == ref["set"]
        for k in ("half", "t", "slice", "int", "bool", "p"):
            assert ours[k].dtype == ref[k].dtype and torch.equal(ours[k], ref[k]), k
        for k in ref["sd"]:
            assert torch.equal(ours["sd"][k], ref["sd"][k])
        assert ours["opt"]["param_groups"] == ref["opt"]["param_groups"]
        assert torch.equal(ours["opt"]["state"][0]["exp_avg"], ref["opt"]["state"][0]["exp_avg"])


def test_unpickler_refuses_before_hashing_and_names_the_file():
    bomb = pickle.EMPTY_TUPLE + (pickle.DUP + pickle.TUPLE2) * 100
    data = b"\x80\x02" + pickle.EMPTY_DICT + bomb + pickle.NONE + pickle.SETITEM + pickle.STOP
    u = BoundedUnpickler(io.BytesIO(data), path="bomb.pkl", budget=ReadBudget("bomb.pkl", len(data)),
                         size=len(data), allow=torch_allow_list())
    start = time.perf_counter()
    with pytest.raises(PickleRefusedError, match=r"bomb\.pkl: a dict key is tuple"):
        run_unpickler(u)
    assert time.perf_counter() - start < 1


def test_unpickler_refuses_globals_calls_and_builds_outside_the_allow_list():
    class Evil:
        def __reduce__(self):
            return (os.system, ("true",))
    for payload in (pickle.dumps(Evil(), protocol=2), pickle.dumps(argparse.Namespace(a=1), protocol=2)):
        u = BoundedUnpickler(io.BytesIO(payload), path="e.pkl", budget=ReadBudget("e.pkl", len(payload)),
                             size=len(payload), allow=torch_allow_list())
        with pytest.raises(PickleRefusedError, match="refusing to load global"):
            run_unpickler(u)


def test_budget_env_var_limits_a_read(tmp_path, monkeypatch):
    p = tmp_path / "t.pt"
    torch.save({"w": torch.zeros(1 << 20)}, p)     # 4 MiB of data
    monkeypatch.setenv("NADA_MAX_LOAD_BYTES", str(1 << 20))
    with pytest.raises(UntrustedFileError, match="NADA_MAX_LOAD_BYTES"):
        read_torch_file(p)
    monkeypatch.setenv("NADA_MAX_LOAD_BYTES", str(64 << 20))
    assert read_torch_file(p)["w"].shape == (1 << 20,)


def test_time_limit_fails_closed(tmp_path, monkeypatch):
    p = tmp_path / "t.pt"
    torch.save({f"k{i}": i for i in range(20000)}, p, _use_new_zipfile_serialization=False)
    monkeypatch.setenv("NADA_MAX_LOAD_SECONDS", "1e-9")
    with pytest.raises(UntrustedFileError, match="NADA_MAX_LOAD_SECONDS"):
        read_torch_file(p)


def test_json_nesting_is_an_error_not_a_recursion_error():
    with pytest.raises(UntrustedFileError, match="nested 100000 levels"):
        loads_json("[" * 100000 + "]" * 100000, "x", "f")
    assert loads_json('{"a": "[[[[[", "b": [1, [2]]}', "x", "f", max_depth=3) == {"a": "[[[[[", "b": [1, [2]]}


def test_npy_reader(tmp_path):
    a = np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4))
    np.save(tmp_path / "a.npy", a)
    assert np.array_equal(read_npy(tmp_path / "a.npy"), a)
    (tmp_path / "cut.npy").write_bytes((tmp_path / "a.npy").read_bytes()[:-4])
    with pytest.raises(UntrustedFileError, match=r"cut\.npy.*declares shape \[3, 4\]"):
        read_npy(tmp_path / "cut.npy")


def test_safetensors_reader_matches_the_library(tmp_path):
    from safetensors.torch import save_file
    sd = {"a": torch.randn(3).half(), "b": torch.randn(2, 3), "c": torch.zeros(0), "d": torch.arange(5),
          "e": torch.randn(7).to(torch.bfloat16)}
    save_file(sd, str(tmp_path / "s.safetensors"), metadata={"k": "v"})
    ours, meta = read_safetensors(tmp_path / "s.safetensors")
    assert meta == {"k": "v"} and set(ours) == set(sd)
    for k in sd:
        assert ours[k].dtype == sd[k].dtype and torch.equal(ours[k], sd[k])


def test_generator_at_a_non_utf8_path_round_trips(tmp_path):
    """Issue 10 class 5: the pack can save under a non-UTF-8 name, so it must read it back."""
    folder = os.path.join(os.fsdecode(bytes(tmp_path)), os.fsdecode(b"mod\xe8les_\xff"))
    os.makedirs(folder)
    G = randomize(Generator(tiny_config()).eval())
    for name in ("g.safetensors", os.fsdecode(b"g\xfe.safetensors")):
        p = os.path.join(folder, name)
        save_generator(G, p)
        h = load_generator(p)
        z = z_from_seeds([0, 1], G.cfg.z_dim)
        with torch.no_grad():
            assert torch.equal(h.G(z), G(z))


def test_nvidia_pickle_with_augment_pipe_and_numpy_values_loads(tmp_path):
    """Real NVIDIA pickles also hold an AugmentPipe network, numpy scalars and (stylegan3)
    small numpy arrays: the stand-ins read them without numpy's own reconstruction."""
    import collections

    from writers import nvidia_pickle as nv
    from nada_ops.stylegan.formats.nvidia_pkl import read_nvidia_pickle
    G = randomize(Generator(tiny_config()).eval())
    marker = tmp_path / "marker"
    src = nv.marker_module_src(marker)
    pipe = nv.Persistent("AugmentPipe", src, nv.module_state(
        buffers={"Hz_geom": torch.randn(12), "Hz_fbank": torch.randn(3, 12)}, xflip=1.0, p=np.float32(0.2),
        in_size=np.broadcast_to(np.asarray([36, 36]), [2]), imgfilter_std=np.float64(1.0)))
    data = dict(G_ema=nv.generator_record(G, src), augment_pipe=pipe, training_set_kwargs=nv.EasyDict(
        resolution=32, max_size=np.int64(70000), use_labels=False), extra=collections.OrderedDict(a=np.arange(3)))
    for protocol in (2, 4, 5):
        p = tmp_path / f"net{protocol}.pkl"
        nv.dump(data, p, protocol=protocol)
        r = read_nvidia_pickle(p)
        assert r.cfg == G.cfg and r.provenance["training_set_kwargs"]["max_size"] == 70000
    assert not marker.exists()
