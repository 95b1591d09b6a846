"""Hostile model and tensor files, each written from code (nothing binary is committed).

Every file is small (bytes to a few hundred KB) and aimed at one defect class of issue 10:

- ``size``: declared sizes far beyond the data (stride-0 / overlapping / oversized views
  of tiny storages in .pt, .pkl, TorchScript, safetensors and .npy; storages and zip
  records that claim more than they hold; numpy reconstruction bombs; architectures whose
  weights cannot be in the file);
- ``hang``: pickles whose cost explodes when touched (nested shared lists whose repr is
  2^60 long, shared nested tuples whose hash is 2^100 as dict keys and set members,
  colliding big-int keys, deep nesting), in NVIDIA .pkl, torch zips, legacy .pt and
  TorchScript archives;
- ``meta``: malformed safetensors metadata (types, nesting, resampling filters, integer
  weights);
- ``error``: files that used to give raw tracebacks (deep module trees, wrong shapes).

:func:`write_all` writes them into a folder and returns one :class:`Case` per file: which
loader to run and what the refusal must say.
"""
from __future__ import annotations

import collections
import io
import json
import pickle as P
import struct
import types
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from nada_ops.stylegan.config import StyleGAN2Config
from nada_ops.stylegan.formats import reference_shapes
from nada_ops.stylegan.formats.rosinality_pt import key_table, to_rosinality_state_dict
from nada_ops.stylegan.networks import Generator
from writers import nvidia_pickle as nv
from writers.nvidia_pickle import Call, Global, Persistent

TINY = StyleGAN2Config(img_resolution=32, z_dim=32, w_dim=32, channel_base=512, channel_max=32, num_mapping_layers=2)
#: what issue 10's probe used: 1024 px, 2048 channels (a ~2 GB generator)
HUGE = StyleGAN2Config(img_resolution=1024, z_dim=512, w_dim=512, channel_base=1 << 20, channel_max=2048)
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


@dataclass
class Case:
    name: str          # file name in the folder
    loader: str        # generator | direction | latents | clip_archive | clip_state_dict
    klass: str         # size | hang | meta | error
    expect: str = ""   # regex the error message must match ("" = any clear refusal)


# ------------------------------------------------------------------ pickle assembly
MEMO = 1_000_000     # memo slots used by hand-made opcodes (far above the pickler's own)


def _u(s: str) -> bytes:
    b = s.encode()
    return P.SHORT_BINUNICODE + bytes([len(b)]) + b if len(b) < 256 else P.BINUNICODE + struct.pack("<I", len(b)) + b


def _put(i: int) -> bytes:
    return P.LONG_BINPUT + struct.pack("<I", MEMO + i)


def _get(i: int) -> bytes:
    return P.LONG_BINGET + struct.pack("<I", MEMO + i)


def tuple_hash_bomb(depth: int = 100) -> bytes:
    """t = (); t = (t, t) ``depth`` times: 2 bytes a level, hash() costs 2^depth."""
    return P.EMPTY_TUPLE + (P.DUP + P.TUPLE2) * depth


def list_repr_bomb(depth: int = 60, slot: int = 0) -> bytes:
    """l = []; l = [l, l] ``depth`` times: repr()/str() cost 2^depth."""
    out = P.EMPTY_LIST
    for _ in range(depth):
        out += _put(slot) + P.POP + P.MARK + _get(slot) + _get(slot) + P.LIST
    return out


def deep_list(depth: int) -> bytes:
    """A list nested ``depth`` levels deep (recursive consumers hit RecursionError)."""
    return P.EMPTY_LIST * depth + P.APPEND * (depth - 1)


def colliding_int_keys(n: int = 20000) -> bytes:
    """A dict whose int keys all hash alike (k * (2^61 - 1)): quadratic insertion."""
    out = P.EMPTY_DICT + P.MARK
    mod = (1 << 61) - 1
    for i in range(1, n + 1):
        b = (i * mod).to_bytes(16, "little", signed=True)
        out += P.LONG1 + bytes([len(b)]) + b + P.NONE
    return out + P.SETITEMS


class Raw:
    """Opcode bytes written as they are (they leave exactly one object on the stack)."""

    def __init__(self, data: bytes):
        self.data = data


class PersRef:
    """Written as a persistent id (how torch zips refer to storages)."""

    def __init__(self, pid):
        self.pid = pid


class NewObj:
    """``module.name`` created by NEWOBJ then filled by BUILD (TorchScript's module objects)."""

    def __init__(self, module: str, name: str, state):
        self.module, self.name, self.state = module, name, state


class _Pickler(nv._Pickler):
    dispatch = dict(nv._Pickler.dispatch)

    def persistent_id(self, obj):
        return obj.pid if type(obj) is PersRef else None

    def _save_raw(self, obj):
        self.write(obj.data)

    dispatch[Raw] = _save_raw

    def _save_newobj(self, obj):
        self.save(Global(obj.module, obj.name))
        self.write(P.EMPTY_TUPLE + P.NEWOBJ)
        self.memoize(obj)
        self.save(obj.state)
        self.write(P.BUILD)

    dispatch[NewObj] = _save_newobj


def dumps(obj, protocol: int = 2) -> bytes:
    f = io.BytesIO()
    _Pickler(f, protocol=protocol).dump(obj)
    return f.getvalue()


def dump(obj, path: Path, protocol: int = 3) -> None:
    """Like ``writers.nvidia_pickle.dump`` plus Raw/PersRef/NewObj. Protocol 3: memo slots
    are explicit (protocol 4's MEMOIZE numbering would shift under Raw's own slots)."""
    Path(path).write_bytes(dumps(obj, protocol))


def _od():
    return collections.OrderedDict()


def tensor_ref(key: str, numel: int, size, stride, offset: int = 0, storage: str = "FloatStorage"):
    """A torch-zip tensor: ``_rebuild_tensor_v2`` of storage record ``key`` (``numel`` declared)."""
    pid = ("storage", Global("torch", storage), key, "cpu", numel)
    return Call(Global("torch._utils", "_rebuild_tensor_v2"),
                (PersRef(pid), offset, tuple(size), tuple(stride), False, _od()))


def legacy_storage(numel_declared: int, data: bytes, numel_in_data: int | None = None,
                   sys_info=None, storage: str = "FloatStorage") -> bytes:
    """A legacy-format ``torch.save`` of one storage (what ``_load_from_bytes`` parses)."""
    info = sys_info if sys_info is not None else Raw(
        P.EMPTY_DICT + _u("protocol_version") + P.BININT2 + struct.pack("<H", 1001) + P.SETITEM
        + _u("little_endian") + P.NEWTRUE + P.SETITEM)
    out = dumps(LEGACY_MAGIC) + dumps(1001) + dumps(info)
    out += dumps(PersRef(("storage", Global("torch", storage), "0", "cpu", numel_declared, None)))
    out += dumps(["0"])
    n = numel_declared if numel_in_data is None else numel_in_data
    return out + struct.pack("<q", n) + data


class NvStorage:
    """An NVIDIA-pickle storage: ``torch.storage._load_from_bytes(<legacy bytes>)``."""

    def __init__(self, payload: bytes):
        self.payload = payload

    def __reduce__(self):
        return Global("torch.storage", "_load_from_bytes"), (self.payload,)


class NvTensor:
    """An NVIDIA-pickle tensor with any geometry (stand-in for a parameter in a record)."""

    def __init__(self, storage: NvStorage, size, stride, offset: int = 0):
        self.storage, self.size, self.stride, self.offset = storage, tuple(size), tuple(stride), offset

    def detach(self):
        return self

    def clone(self):
        return self

    def __reduce__(self):
        return Global("torch._utils", "_rebuild_tensor_v2"), (self.storage, self.offset, self.size, self.stride,
                                                              False, _od())


@contextmanager
def _raw_params():
    with mock.patch.object(nv, "_param", lambda t: t):
        yield


def _contiguous_stride(shape):
    stride, acc = [], 1
    for s in reversed(shape):
        stride.append(acc)
        acc *= s
    return tuple(reversed(stride))


def nvidia_record(cfg: StyleGAN2Config, tensor_for, marker) -> Persistent:
    """An NVIDIA generator record of ``cfg`` whose tensors are ``tensor_for(shape)``."""
    shapes = reference_shapes(cfg)
    G = types.SimpleNamespace(cfg=cfg, state_dict=lambda: {k: tensor_for(s) for k, s in shapes.items()})
    with _raw_params():
        return nv.generator_record(G, nv.marker_module_src(marker))


def torch_zip(path: Path, data_pkl: bytes, records: dict | None = None, prefix: str = "archive",
              compressed=(), extra: dict | None = None, pkl_compressed: bool = False) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{prefix}/data.pkl", data_pkl,
                    compress_type=zipfile.ZIP_DEFLATED if pkl_compressed else zipfile.ZIP_STORED)
        zf.writestr(f"{prefix}/byteorder", "little")
        for k, v in (records or {}).items():
            zf.writestr(f"{prefix}/data/{k}", v,
                        compress_type=zipfile.ZIP_DEFLATED if k in compressed else zipfile.ZIP_STORED)
        for k, v in (extra or {}).items():
            zf.writestr(f"{prefix}/{k}", v)
        zf.writestr(f"{prefix}/version", "3\n")


def _deflated_zeros_entry(zf: zipfile.ZipFile, name: str, nbytes: int) -> None:
    """A zip entry of ``nbytes`` zeros, compressed in chunks (a few hundred KB on disk)."""
    info = zipfile.ZipInfo(name)
    info.compress_type = zipfile.ZIP_DEFLATED
    with zf.open(info, "w", force_zip64=True) as f:
        chunk = bytes(1 << 20)
        for _ in range(nbytes >> 20):
            f.write(chunk)


def torchscript_zip(path: Path, data_pkl: bytes, records: dict | None = None, prefix: str = "model") -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{prefix}/data.pkl", data_pkl)
        zf.writestr(f"{prefix}/constants.pkl", P.dumps((), protocol=2))
        zf.writestr(f"{prefix}/code/__torch__.py", "# TorchScript code would be here; it is never read\n")
        for k, v in (records or {}).items():
            zf.writestr(f"{prefix}/data/{k}", v)


def safetensors_raw(path: Path, header, data: bytes = b"", raw_header: bytes | None = None) -> None:
    h = raw_header if raw_header is not None else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(h)) + h + data)


def npy_raw(path: Path, header: str, data: bytes = b"") -> None:
    h = header.encode("latin1")
    pad = 64 - (10 + len(h) + 1) % 64
    h = h + b" " * pad + b"\n"
    path.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h + data)


# ------------------------------------------------------------------------ the files
def _tiny_G(seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    return Generator(TINY).eval()


def _our_safetensors(path: Path, G: Generator, arch_override: dict | None = None, meta_override: dict | None = None,
                     dtype_override: dict | None = None) -> None:
    """This pack's format written by hand (so metadata and dtypes can be anything)."""
    arch = G.cfg.to_dict()
    arch.update(arch_override or {})
    meta = {"format": "nada-stylegan2", "format_version": "1", "architecture": json.dumps(arch),
            "provenance": "{}"}
    meta.update(meta_override or {})
    header, blobs, pos = {"__metadata__": meta}, [], 0
    for k, t in G.state_dict().items():
        t = t.detach().contiguous()
        st = (dtype_override or {}).get(k, "F32")
        if st == "I32":
            b = t.to(torch.int32).numpy().tobytes()
        else:
            b = t.float().numpy().tobytes()
        header[k] = {"dtype": st, "shape": list(t.shape), "data_offsets": [pos, pos + len(b)]}
        blobs.append(b)
        pos += len(b)
    safetensors_raw(path, header, b"".join(blobs))


def write_all(folder: Path) -> list[Case]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / "module_src_was_executed"
    cases: list[Case] = []

    def add(name, loader, klass, expect=""):
        cases.append(Case(name, loader, klass, expect))
        return folder / name

    G = _tiny_G()
    rosi_sd = to_rosinality_state_dict(G)
    STRIDE = r"stride 0|overlapping"
    NODATA = r"does not contain the data|storage holds|record holds|only \d+ bytes (remain|follow)|file holds"

    # ============================================================ class 1: sizes
    # .pt (torch zip, written by torch.save itself): stride-0 views of 1-element storages
    torch.save({"g_ema": {rk: torch.zeros(1).expand(*rs) for _, rk, _, rs in key_table(HUGE)}},
               add("pt_huge_arch_expanded.pt", "generator", "size", STRIDE))
    torch.save({"g_ema": dict(rosi_sd, **{"convs.0.conv.weight": torch.zeros(32 * 32 * 9).as_strided(
        (1, 32, 32, 3, 3), (0, 1, 1, 1, 1))})}, add("pt_overlapping_strides.pt", "generator", "size", STRIDE))
    # ... and hand-made: a contiguous [100000, 100000] view of a 16-byte storage
    torch_zip(add("pt_storage_too_small.pt", "generator", "size", NODATA),
              dumps({"g_ema": {"style.1.weight": tensor_ref("0", 4, (100000, 100000), (100000, 1))}}),
              {"0": bytes(16)})
    # the pickle declares 10^9 floats but the storage record holds 16 bytes
    torch_zip(add("pt_record_smaller_than_declared.pt", "generator", "size", NODATA),
              dumps({"g_ema": {"style.1.weight": tensor_ref("0", 10 ** 9, (1000, 1000), (1000, 1))}}),
              {"0": bytes(16)})
    # zip records that inflate far beyond what is needed: data.pkl of 128 MiB; a storage
    # of 128 MiB for a file of ~130 KB; a storage record of 128 MiB of which a tensor
    # needs 16 bytes (read without inflating the rest)
    p = add("pt_inflating_data_pkl.pt", "generator", "size", r"declares \d+ bytes of pickle")
    with zipfile.ZipFile(p, "w") as zf:
        _deflated_zeros_entry(zf, "archive/data.pkl", 128 << 20)
    p = add("pt_inflating_storage.pt", "generator", "size", r"more than 4x the file|inflate")
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("archive/data.pkl", dumps({"g_ema": {"style.1.weight": tensor_ref("0", 32 << 20, (8192, 4096),
                                                                                       (4096, 1))}}))
        _deflated_zeros_entry(zf, "archive/data/0", 128 << 20)
    p = add("pt_inflating_record_small_need.pt", "generator", "size", r"no generator|g_ema")
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("archive/data.pkl", dumps({"x": tensor_ref("0", 4, (4,), (1,))}))
        _deflated_zeros_entry(zf, "archive/data/0", 128 << 20)
    # legacy (non-zip) .pt whose object pickle declares a 4 GB storage
    legacy = dumps(LEGACY_MAGIC) + dumps(1001) + dumps({"little_endian": True})
    legacy += dumps({"g_ema": {"style.1.weight": Call(Global("torch._utils", "_rebuild_tensor_v2"), (
        PersRef(("storage", Global("torch", "FloatStorage"), "0", "cpu", 10 ** 9, None)), 0, (10 ** 9,), (1,),
        False, _od()))}})
    legacy += dumps(["0"]) + struct.pack("<q", 4) + bytes(16)
    add("pt_legacy_huge_storage.pt", "generator", "size", NODATA).write_bytes(legacy)

    # NVIDIA .pkl declaring channel_max 2048 at 1024 px: stride-0 views of one 4-byte storage
    one = NvStorage(legacy_storage(1, bytes(4)))
    rec = nvidia_record(HUGE, lambda s: NvTensor(one, s, (0,) * len(s)), marker)
    dump(dict(G_ema=rec, augment_pipe=None), add("pkl_huge_arch_stride0.pkl", "generator", "size", STRIDE))
    # ... contiguous views of a 16-byte storage
    four = NvStorage(legacy_storage(4, bytes(16)))
    rec = nvidia_record(HUGE, lambda s: NvTensor(four, s, _contiguous_stride(s)), marker)
    dump(dict(G_ema=rec), add("pkl_huge_arch_small_storage.pkl", "generator", "size", NODATA))
    # ... a pickled storage whose legacy header declares 10^9 floats over 16 bytes of data
    bad = NvStorage(legacy_storage(10 ** 9, bytes(16), numel_in_data=4))
    dump(dict(G_ema=nvidia_record(TINY, lambda s: NvTensor(bad, s, _contiguous_stride(s)), marker)),
            add("pkl_storage_declares_more.pkl", "generator", "size", NODATA))
    # honest tiny tensors, architecture fields beyond the data / beyond any real model
    for name, edit, expect in (
            ("pkl_arch_w_dim_2048.pkl", {"z_dim": 2048, "w_dim": 2048}, r"holds only [\d,]+ bytes of tensor data"),
            ("pkl_arch_channel_max_8192.pkl", {"channel_max": 8192}, r"channel_max 8192 is larger"),
            ("pkl_arch_mapping_10e12_layers.pkl", {"num_layers": 10 ** 12}, r"mapping"),
            ("pkl_arch_resolution_2e40.pkl", {"img_resolution": 1 << 40}, r"img_resolution|resolution"),
            ("pkl_arch_img_channels_1e6.pkl", {"img_channels": 10 ** 6}, r"img_channels|torgb|shape"),
            ("pkl_arch_conv_clamp_nan.pkl", {"conv_clamp": float("nan")}, r"conv_clamp")):
        rec = nv.generator_record(G, nv.marker_module_src(marker))
        _edit_nvidia_arch(rec, edit)
        dump(dict(G_ema=rec), add(name, "generator", "size", expect))
    # numpy reconstruction bombs (112 bytes used to fill 4.8 GB)
    for name, obj in (
            ("pkl_numpy_reconstruct_bomb.pkl", Call(Global("numpy.core.multiarray", "_reconstruct"), (
                Global("numpy", "ndarray"), (600_000_000,), b"b"))),
            ("pkl_numpy_array_state_bomb.pkl", Raw(
                _np_array_opcodes(shape=(600_000_000,), code="f8", data=bytes(8)))),
            ("pkl_numpy_object_dtype.pkl", Call(Global("numpy", "dtype"), ("O8", False, True))),
            ("pkl_numpy_void_dtype.pkl", Call(Global("numpy", "dtype"), ("V4800000000", False, True))),
            ("pkl_numpy_scalar_object.pkl", Call(Global("numpy._core.multiarray", "scalar"), (
                Call(Global("numpy", "dtype"), ("O8", False, True)), Raw(list_repr_bomb(40)))))):
        dump(dict(training_set_kwargs=obj), add(name, "generator", "size"))
    # safetensors: a tensor declaring 10^9 floats over 16 bytes; offsets past the end
    safetensors_raw(add("st_shape_beyond_offsets.safetensors", "generator", "size", r"data offsets span"),
                    {"w": {"dtype": "F32", "shape": [100000, 10000], "data_offsets": [0, 16]}}, bytes(16))
    safetensors_raw(add("st_offsets_past_end.safetensors", "generator", "size", r"truncated"),
                    {"w": {"dtype": "F32", "shape": [1 << 28], "data_offsets": [0, 1 << 30]}}, bytes(16))
    safetensors_raw(add("st_overlapping_offsets.safetensors", "generator", "size", r"overlaps"),
                    {"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                     "b": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, bytes(16))
    _our_safetensors(add("st_arch_1024px_2048ch.safetensors", "generator", "size",
                         r"holds only [\d,]+ bytes of tensor data"), G,
                     arch_override={"img_resolution": 1024, "channel_base": 1 << 20, "channel_max": 2048})
    # TorchScript CLIP: a 2 KB archive whose (stride-0) shapes imply a multi-GB model
    sd = {"visual.proj": tensor_ref("0", 1, (4096, 4096), (0, 0)),
          "visual.conv1.weight": tensor_ref("0", 1, (4096, 3, 32, 32), (0, 0, 0, 0)),
          "token_embedding.weight": tensor_ref("0", 1, (1 << 20, 4096), (0, 0))}
    torchscript_zip(add("ts_huge_stride0.pt", "clip_archive", "size", STRIDE),
                    dumps(NewObj("__torch__", "CLIP", sd)), {"0": bytes(4)})
    # ... names implying 1000 text layers (0-element tensors cost no bytes)
    sd = {f"transformer.resblocks.{i}.ln_1.weight": tensor_ref("0", 0, (0,), (1,)) for i in range(1000)}
    sd.update({"visual.proj": tensor_ref("1", 4, (2, 2), (2, 1)), "ln_final.weight": tensor_ref("1", 4, (4,), (1,))})
    torchscript_zip(add("ts_1000_layers.pt", "clip_archive", "size", r"text layers|text width"),
                    dumps(NewObj("__torch__", "CLIP", sd)), {"0": b"", "1": bytes(16)})
    # directions / latents: stride-0 views copied before the shape check; .npy headers
    torch.save(torch.zeros(1).expand(30000, 30000), add("dir_expand.pt", "direction", "size", STRIDE))
    torch.save({"ws": torch.zeros(1, 1, 512).expand(3_000_000, 18, 512)},
               add("latents_expand.pt", "latents", "size", STRIDE))
    npy_raw(add("dir_npy_2e40.npy", "direction", "size", r"declares shape"),
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776,), }", bytes(16))
    npy_raw(add("latents_npy_3e6.npy", "latents", "size", r"declares shape"),
            "{'descr': '<f4', 'fortran_order': False, 'shape': (3000000, 18, 512), }", bytes(64))
    npy_raw(add("dir_npy_object.npy", "direction", "size", r"object|pickle"),
            "{'descr': '|O', 'fortran_order': False, 'shape': (4,), }", bytes(32))
    npy_raw(add("dir_npy_subarray.npy", "direction", "size", r"dtype"),
            "{'descr': [('a', '<f4', (1000000000,))], 'fortran_order': False, 'shape': (1,), }", bytes(4))
    add("dir_npy_v2_header_4gb.npy", "direction", "size", r"Header info length").write_bytes(
        b"\x93NUMPY\x02\x00" + struct.pack("<I", 0xFFFFFFF0) + b"{'descr'")
    npy_raw(add("dir_npy_huge_header.npy", "direction", "size", r"not a plain numpy"),
            "{'descr': '<f4', 'fortran_order': False, 'shape': (" + "1," * 20000 + "), }")

    # ============================================================ class 2: hangs
    # repr/str of attacker-built nested lists (365 bytes used to hang `info`)
    dump(dict(G_ema=Call(nv.RECONSTRUCT, (dict(type="class", class_name=Raw(list_repr_bomb()), state={}),))),
            add("pkl_repr_bomb_class_name.pkl", "generator", "hang", r"class name"))
    rec = nv.generator_record(G, nv.marker_module_src(marker))
    rec.state["_init_kwargs"]["z_dim"] = Raw(list_repr_bomb(slot=1))
    rec.state["z_dim"] = Raw(list_repr_bomb(slot=2))
    dump(dict(G_ema=rec), add("pkl_repr_bomb_z_dim.pkl", "generator", "hang", r"z_dim"))
    rec = nv.generator_record(G, nv.marker_module_src(marker))
    rec.state["_modules"]["mapping"].state["_modules"]["fc0"].state["activation"] = Raw(list_repr_bomb(slot=3))
    dump(dict(G_ema=rec), add("pkl_repr_bomb_activation.pkl", "generator", "hang", r"activation"))
    dump(dict(G_ema=Raw(list_repr_bomb())), add("pkl_repr_bomb_network.pkl", "generator", "hang"))
    # shared nested tuples used as dict keys / set members: hash() costs 2^100
    KEYS = r"keys must be strings|set member"
    bomb = Raw(tuple_hash_bomb())
    hash_objs = {
        "dictkey": Raw(P.EMPTY_DICT + tuple_hash_bomb() + P.NONE + P.SETITEM),
        "dict_opcode": Raw(P.MARK + tuple_hash_bomb() + P.NONE + P.DICT),
        "setmember": Raw(P.EMPTY_SET + P.MARK + tuple_hash_bomb() + P.ADDITEMS),
        "frozenset": Raw(P.MARK + tuple_hash_bomb() + P.FROZENSET),
        "builtins_set": Call(Global("builtins", "set"), ([bomb],)),
        "ordereddict_pairs": Call(Global("collections", "OrderedDict"), ([(bomb, 1)],)),
        "int_collisions": Raw(colliding_int_keys()),
    }
    (folder / "hash_bomb_raw.pkl").write_bytes(b"\x80\x02" + P.EMPTY_DICT + tuple_hash_bomb() + P.NONE + P.SETITEM + P.STOP)
    cases.append(Case("hash_bomb_raw.pkl", "generator", "hang", KEYS))      # the 208-byte file
    for tag, obj in hash_objs.items():
        dump(dict(G_ema=None, training_set_kwargs=obj), add(f"pkl_hash_{tag}.pkl", "generator", "hang", KEYS))
        torch_zip(add(f"pt_hash_{tag}.pt", "generator", "hang", KEYS), dumps({"g_ema": rosi_sd_refs(), "x": obj}),
                  rosi_records())
    torch_zip(add("dir_hash_dictkey.pt", "direction", "hang", KEYS), dumps({"direction": hash_objs["dictkey"]}))
    torch_zip(add("latents_hash_setmember.pt", "latents", "hang", KEYS), dumps({"ws": hash_objs["setmember"]}))
    legacy = dumps(LEGACY_MAGIC) + dumps(1001) + dumps(hash_objs["dictkey"])
    add("pt_legacy_hash_sysinfo.pt", "generator", "hang", KEYS).write_bytes(legacy)
    dump(dict(G_ema=NvTensor(NvStorage(legacy_storage(1, bytes(4), sys_info=hash_objs["dictkey"])), (1,), (1,))),
            add("pkl_hash_in_storage_bytes.pkl", "generator", "hang", KEYS))
    torchscript_zip(add("ts_hash_dictkey.pt", "clip_archive", "hang", KEYS),
                    dumps(NewObj("__torch__", "CLIP", {"x": hash_objs["dictkey"]})))
    # deep nesting
    dump(dict(G_ema=None, training_set_kwargs=Raw(deep_list(200_000))),
            add("pkl_deep_list.pkl", "generator", "hang"))
    torch_zip(add("dir_deep_list.pt", "direction", "hang"), dumps({"direction": Raw(deep_list(200_000))}))
    # large string declared by a tiny pickle
    add("pkl_declares_2e60_bytes.pkl", "generator", "hang", r"only \d+\s*bytes remain").write_bytes(
        b"\x80\x04" + P.BINUNICODE8 + struct.pack("<Q", 1 << 60) + b"abc")
    add("pkl_frame_2e40.pkl", "generator", "hang", r"only \d+\s*bytes remain").write_bytes(
        b"\x80\x04" + P.FRAME + struct.pack("<Q", 1 << 40) + b"abc")

    # ============================================================ class 3: metadata
    for name, arch, expect in (
            ("st_filter_20000_taps.safetensors", {"resample_filter": [1] * 20000}, r"resample_filter"),
            ("st_filter_zero_sum.safetensors", {"resample_filter": [1, -1]}, r"non-zero sum"),
            ("st_filter_nan.safetensors", {"resample_filter": [float("nan"), 1]}, r"resample_filter"),
            ("st_filter_nested.safetensors", {"resample_filter": [[1, 3], [3, 1]]}, r"resample_filter|nested"),
            ("st_resolution_string.safetensors", {"img_resolution": "32"}, r"img_resolution"),
            ("st_z_dim_float.safetensors", {"z_dim": 32.0}, r"z_dim"),
            ("st_z_dim_bool.safetensors", {"z_dim": True}, r"z_dim"),
            ("st_mapping_layers_1000.safetensors", {"num_mapping_layers": 1000}, r"num_mapping_layers"),
            ("st_conv_clamp_inf.safetensors", {"conv_clamp": float("inf")}, r"conv_clamp"),
            ("st_lr_mul_string.safetensors", {"mapping_lr_mul": "0.01"}, r"mapping_lr_mul")):
        _our_safetensors(add(name, "generator", "meta", expect), G, arch_override=arch)
    _our_safetensors(add("st_int_weights.safetensors", "generator", "meta", r"dtype"), G,
                     dtype_override={k: "I32" for k in G.state_dict()})
    _our_safetensors(add("st_one_int_weight.safetensors", "generator", "meta", r"dtype"), G,
                     dtype_override={"synthesis.b8.conv1.weight": "I32"})
    _our_safetensors(add("st_arch_deep_json.safetensors", "generator", "meta", r"nested"), G,
                     meta_override={"architecture": "[" * 100000 + "]" * 100000})
    _our_safetensors(add("st_arch_list.safetensors", "generator", "meta", r"JSON object|nested"), G,
                     meta_override={"architecture": "[1, 2]"})
    _our_safetensors(add("st_provenance_deep.safetensors", "generator", "meta", r"nested"), G,
                     meta_override={"provenance": '{"a":' * 5000 + "1" + "}" * 5000})
    safetensors_raw(add("st_header_deep.safetensors", "generator", "meta", r"nested"), None,
                    raw_header=b'{"a":' + b"[" * 100000 + b"]" * 100000 + b"}")
    safetensors_raw(add("st_metadata_not_strings.safetensors", "generator", "meta", r"__metadata__"),
                    {"__metadata__": {"format": {"nested": [1, 2]}}})
    safetensors_raw(add("st_entry_wrong_types.safetensors", "generator", "meta", r"shape|dtype|data_offsets"),
                    {"w": {"dtype": "F32", "shape": "4", "data_offsets": [0, 16]}}, bytes(16))
    safetensors_raw(add("st_header_not_utf8.safetensors", "generator", "meta", r"UTF-8"), None,
                    raw_header=b'{"\xff\xfe": 1}')

    # ============================================================ class 6: clear errors
    deep = P.NONE
    for _ in range(20000):       # a module tree 20000 levels deep, built iteratively
        deep += _put(9) + P.POP + P.GLOBAL + b"__torch__\nM\n" + P.EMPTY_TUPLE + P.NEWOBJ
        deep += P.EMPTY_DICT + _u("m") + _get(9) + P.SETITEM + P.BUILD
    torchscript_zip(add("ts_deep_module_tree.pt", "clip_archive", "error", r"nested deeper"),
                    b"\x80\x02" + deep + P.STOP)
    dump(dict(G_ema=Raw(_deep_persistent(5000))), add("pkl_deep_modules.pkl", "generator", "error",
                                                             r"nesting deeper"))
    torchscript_zip(add("ts_foreign_global.pt", "clip_archive", "error", r"refusing to load global 'os\.system'"),
                    dumps(Call(Global("os", "system"), ("true",))))

    # open_clip state dicts (architecture 'tiny-vit', registered by the runner)
    from safetensors.torch import save_file

    from nada_ops.clip.tiny import build_tiny_open_clip
    clip_sd = {k: v.contiguous() for k, v in build_tiny_open_clip(seed=0).state_dict().items()}
    bad = dict(clip_sd, **{"visual.conv1.weight": torch.zeros(32, 3, 4, 4)})
    save_file(bad, str(add("clip_wrong_shape.safetensors", "clip_state_dict", "error", r"visual\.conv1\.weight.*shape")))
    torch.save(bad, add("clip_wrong_shape.bin", "clip_state_dict", "error", r"visual\.conv1\.weight.*shape"))
    torch.save(dict(clip_sd, **{"token_embedding.weight": torch.zeros(1).expand(49408, 32)}),
               add("clip_expanded.bin", "clip_state_dict", "size", STRIDE))
    torch.save(dict(clip_sd, **{"token_embedding.weight": torch.zeros(49408, 32, dtype=torch.int32)}),
               add("clip_int_weights.bin", "clip_state_dict", "meta", r"dtype"))
    torch_zip(add("clip_hash_bomb.bin", "clip_state_dict", "hang", KEYS), dumps({"state_dict": hash_objs["dictkey"]}))
    torch.save({"missing": torch.zeros(3)}, add("clip_missing.bin", "clip_state_dict", "error", r"missing tensors"))
    _stylegan3_cases(add, marker, STRIDE)
    return cases


# ------------------------------------------------------------------ StyleGAN3 pickles
def _tiny_sg3(seed: int = 0):
    from sg3_helpers import tiny_sg3
    return tiny_sg3("t", seed=seed, num_layers=4, num_critical=1, margin_size=2)


def _sg3_record(G, marker, **kw) -> Persistent:
    return nv.stylegan3_generator_record(G, nv.stylegan3_module_src(marker), **kw)


def _edit_sg3(rec: Persistent, where: str, **values) -> Persistent:
    """Set ``values`` in the generator's init kwargs ('kwargs'), on the synthesis record
    ('synthesis'), or on both."""
    for k, v in values.items():
        if where in ("kwargs", "both"):
            rec.state["_init_kwargs"][k] = v
        if where in ("synthesis", "both"):
            rec.state["_modules"]["synthesis"].state[k] = v
    return rec


def _stylegan3_cases(add, marker, STRIDE) -> None:
    """StyleGAN3 variants of the pickle cases above (the same reader, the same limits)."""
    from nada_ops.stylegan.config import StyleGAN3Config
    huge = StyleGAN3Config(img_resolution=1024, z_dim=512, w_dim=512, channel_base=1 << 20, channel_max=2048)
    one = NvStorage(legacy_storage(1, bytes(4)))
    shapes = reference_shapes(huge)
    G = types.SimpleNamespace(cfg=huge, state_dict=lambda: {k: NvTensor(one, s, (0,) * len(s))
                                                            for k, s in shapes.items()})
    with _raw_params():
        rec = _sg3_record(G, marker)
    dump(dict(G_ema=rec), add("sg3_pkl_huge_arch_stride0.pkl", "generator", "size", STRIDE))
    G3 = _tiny_sg3()
    for name, where, values, klass, expect in (
            ("sg3_pkl_w_dim_2048.pkl", "top", {"z_dim": 2048, "w_dim": 2048}, "size",
             r"holds only [\d,]+ bytes of tensor data|sizes other than w_dim"),
            ("sg3_pkl_num_layers_1e12.pkl", "both", {"num_layers": 10 ** 12}, "size", r"num_layers"),
            ("sg3_pkl_margin_1e9.pkl", "both", {"margin_size": 10 ** 9}, "size", r"margin_size"),
            ("sg3_pkl_filter_size_1e6.pkl", "kwargs", {"filter_size": 10 ** 6}, "size", r"filter_size"),
            ("sg3_pkl_first_cutoff_nan.pkl", "kwargs", {"first_cutoff": float("nan")}, "size", r"first_cutoff"),
            ("sg3_pkl_conv_kernel_99.pkl", "kwargs", {"conv_kernel": 99}, "size", r"conv_kernel"),
            ("sg3_pkl_layer_names_bomb.pkl", "synthesis", {"layer_names": Raw(list_repr_bomb(slot=4))}, "hang",
             r"synthesis layers are"),
            ("sg3_pkl_num_critical_bomb.pkl", "both", {"num_critical": Raw(list_repr_bomb(slot=5))}, "hang",
             r"num_critical")):
        rec = _sg3_record(G3, marker)
        if where == "top":
            for k, v in values.items():
                rec.state[k] = v
                rec.state["_init_kwargs"][k] = v
        else:
            _edit_sg3(rec, where, **values)
        dump(dict(G_ema=rec), add(name, "generator", klass, expect))
    # a layer attribute that is a shared nested list (its repr would take 2^60 steps)
    layer = G3.cfg.layer_names()[1]
    rec = _sg3_record(G3, marker, layer_attrs={layer: {"padding": Raw(list_repr_bomb(slot=6))}})
    dump(dict(G_ema=rec), add("sg3_pkl_padding_bomb.pkl", "generator", "hang", r"padding"))


def _edit_nvidia_arch(rec: Persistent, edit: dict) -> None:
    """Change architecture fields everywhere the reader may look for them."""
    st = rec.state
    ik = st["_init_kwargs"]
    mapping = st["_modules"]["mapping"]
    for k, v in edit.items():
        if k in ("z_dim", "w_dim", "img_resolution", "img_channels"):
            st[k] = v
            ik[k] = v
        elif k == "num_layers":
            mapping.state["num_layers"] = v
            ik["mapping_kwargs"]["num_layers"] = v
        elif k == "conv_clamp":
            ik["synthesis_kwargs"][k] = v
            for blk in st["_modules"]["synthesis"].state["_modules"].values():
                for lay in blk.state["_modules"].values():
                    lay.state["conv_clamp"] = v
        else:
            ik["synthesis_kwargs"][k] = v


def _np_array_opcodes(shape, code: str, data: bytes) -> bytes:
    """numpy's ndarray pickle: _reconstruct(ndarray, (0,), b'b') + BUILD((1, shape, dtype, False, data))."""
    out = P.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n" + P.GLOBAL + b"numpy\nndarray\n"
    out += P.BININT1 + b"\x00" + P.TUPLE1 + P.SHORT_BINBYTES + b"\x01b" + P.TUPLE3 + P.REDUCE
    out += P.MARK + P.BININT1 + b"\x01"
    out += P.MARK + b"".join(P.BININT + struct.pack("<i", d) for d in shape) + P.TUPLE
    out += P.GLOBAL + b"numpy\ndtype\n" + _u(code) + P.NEWFALSE + P.NEWTRUE + P.TUPLE3 + P.REDUCE
    out += P.MARK + P.BININT1 + b"\x03" + _u("<") + P.NONE + P.NONE + P.NONE
    out += P.BININT + struct.pack("<i", -1) + P.BININT + struct.pack("<i", -1) + P.BININT1 + b"\x00" + P.TUPLE + P.BUILD
    out += P.NEWFALSE + P.BINBYTES + struct.pack("<I", len(data)) + data + P.TUPLE + P.BUILD
    return out


def _deep_persistent(depth: int) -> bytes:
    """NVIDIA persistent records nested ``depth`` deep through '_modules' (built iteratively)."""
    rec = P.GLOBAL + b"torch_utils.persistence\n_reconstruct_persistent_obj\n"
    out = P.NONE
    for _ in range(depth):
        out += _put(7) + P.POP
        out += rec + P.EMPTY_DICT + _u("type") + _u("class") + P.SETITEM + _u("class_name") + _u("Generator")
        out += P.SETITEM + _u("state") + P.EMPTY_DICT + _u("_modules") + P.EMPTY_DICT + _u("m") + _get(7)
        out += P.SETITEM + P.SETITEM + P.SETITEM + P.TUPLE1 + P.REDUCE
    return out


def rosi_sd_refs() -> dict:
    """A tiny honest generator state dict as torch-zip tensor refs (one storage per tensor)."""
    out = {}
    for i, (k, t) in enumerate(to_rosinality_state_dict(_tiny_G()).items()):
        out[k] = tensor_ref(str(i), t.numel(), tuple(t.shape), _contiguous_stride(tuple(t.shape)))
    return out


def rosi_records() -> dict:
    return {str(i): t.contiguous().numpy().tobytes()
            for i, (k, t) in enumerate(to_rosinality_state_dict(_tiny_G()).items())}


def write_controls(folder: Path) -> list[Case]:
    """Valid files of each kind (they must load): proves the harness runs the loaders."""
    from nada_ops.latent_tools import save_latents
    from nada_ops.latents import WLatents
    from nada_ops.stylegan.formats.rosinality_pt import write_rosinality
    from nada_ops.stylegan.io import save_generator

    folder = Path(folder)
    G = _tiny_G(1)
    cases = [Case("ok_generator.pt", "generator", "control", "ok"),
             Case("ok_generator.pkl", "generator", "control", "ok"),
             Case("ok_stylegan3.pkl", "generator", "control", "ok"),
             Case("ok_generator.safetensors", "generator", "control", "ok"),
             Case("ok_direction.npy", "direction", "control", "ok"),
             Case("ok_latents.pt", "latents", "control", "ok")]
    write_rosinality(G, folder / "ok_generator.pt")
    nv.write_nvidia_pickle(G, folder / "ok_generator.pkl", folder / "module_src_was_executed")
    nv.write_stylegan3_pickle(_tiny_sg3(1), folder / "ok_stylegan3.pkl", folder / "module_src_was_executed")
    save_generator(G, folder / "ok_generator.safetensors")
    np.save(folder / "ok_direction.npy", np.ones(32, np.float32))
    save_latents(WLatents(ws=torch.zeros(2, 8, 32)), folder / "ok_latents.pt")
    return cases
