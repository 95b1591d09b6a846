"""Test-side writer of NVIDIA-style StyleGAN2 and StyleGAN3 network pickles (no NVIDIA code needed).

The files reproduce the structure that stylegan2-ada-pytorch's training loop writes with
``pickle.dump(dict(G=..., D=..., G_ema=..., augment_pipe=..., training_set_kwargs=...))``:
every network is pickled as a call to the global
``torch_utils.persistence._reconstruct_persistent_obj(meta)`` with
``meta = dict(type='class', version=6, module_src=<source text>, class_name=..., state=...)``
where ``state`` is the module's ``__dict__`` (``_parameters``, ``_buffers``, ``_modules``
holding nested persistent objects, ``_init_kwargs``, plain attributes, ...). Tensors are
pickled the way torch pickles them for plain ``pickle.dump``.

``module_src`` is a stand-in that creates a marker file when executed, so a test can prove
a reader never executes it. Globals that are not importable here (NVIDIA's persistence
hook, ``dnnlib.util.EasyDict``, forbidden functions such as ``os.system``) are written as
raw GLOBAL opcodes by a small Pickler subclass; nothing is imported or registered.
"""
from __future__ import annotations

import collections
import pickle

import numpy as np
import torch

from nada_ops.ops import setup_filter

PERSISTENCE_VERSION = 6


# ----------------------------------------------------------------------------- pickling
class Global:
    """A reference to ``module.name`` written as a GLOBAL opcode, never resolved here."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def __call__(self, *args, **kwargs):   # save_reduce() insists the callable be callable
        raise RuntimeError(f"{self.module}.{self.name} is a pickle reference only")


RECONSTRUCT = Global("torch_utils.persistence", "_reconstruct_persistent_obj")
EASYDICT = Global("dnnlib.util", "EasyDict")


class Persistent:
    """Pickles as ``_reconstruct_persistent_obj(dict(type, version, module_src, class_name, state))``."""

    def __init__(self, class_name: str, module_src: str, state: dict, version=PERSISTENCE_VERSION):
        self.class_name, self.module_src, self.state, self.version = class_name, module_src, state, version


class EasyDict(dict):
    """Pickles as a ``dnnlib.util.EasyDict`` (a dict subclass in NVIDIA's code)."""


class Call:
    """Pickles as ``func(*args)`` for an arbitrary (possibly forbidden) global ``func``."""

    def __init__(self, func: Global, args: tuple = ()):
        self.func, self.args = func, tuple(args)


class _Pickler(pickle._Pickler):      # the pure-Python pickler lets us add a dispatch entry
    dispatch = dict(pickle._Pickler.dispatch)

    def _save_global_ref(self, obj: Global):
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode("utf-8"))
        self.memoize(obj)

    dispatch[Global] = _save_global_ref

    def reducer_override(self, obj):
        if isinstance(obj, Persistent):
            meta = dict(type="class", version=obj.version, module_src=obj.module_src,
                        class_name=obj.class_name, state=obj.state)
            return RECONSTRUCT, (meta,)
        if type(obj) is EasyDict:
            return EASYDICT, (), None, None, iter(dict(obj).items())
        if isinstance(obj, Call):
            return obj.func, obj.args
        return NotImplemented


def dump(obj, path, protocol: int = 4):
    with open(path, "wb") as f:
        _Pickler(f, protocol=protocol).dump(obj)


# ----------------------------------------------------------------------------- sources
def marker_module_src(marker_path, extra_classes: str = "") -> str:
    """Stand-in module source: executing it (which no safe reader may do) writes the marker."""
    return (
        "# Stand-in for NVIDIA's training/networks.py written by the test-suite.\n"
        "# If this text is ever executed, it leaves a marker file behind.\n"
        "import pathlib\n"
        f"pathlib.Path({str(marker_path)!r}).write_text('module_src was executed')\n"
        "class FullyConnectedLayer: pass\n"
        "class MappingNetwork: pass\n"
        "class SynthesisLayer: pass\n"
        "class ToRGBLayer: pass\n"
        "class SynthesisBlock: pass\n"
        "class SynthesisNetwork: pass\n"
        "class Generator: pass\n"
        "class Discriminator: pass\n"
        + extra_classes
    )


# ----------------------------------------------------------------------------- state trees
def _param(t: torch.Tensor) -> torch.nn.Parameter:
    return torch.nn.Parameter(t.detach().clone(), requires_grad=False)


def module_state(params=None, buffers=None, modules=None, init_kwargs=None, init_args=(), **attrs) -> dict:
    """A ``torch.nn.Module.__dict__`` as NVIDIA's persistent classes pickle it."""
    od = collections.OrderedDict
    state = dict(
        training=False,
        _parameters=od((k, None if v is None else _param(v)) for k, v in (params or {}).items()),
        _buffers=od((k, None if v is None else v.detach().clone()) for k, v in (buffers or {}).items()),
        _non_persistent_buffers_set=set(),
        _backward_pre_hooks=od(), _backward_hooks=od(), _is_full_backward_hook=None,
        _forward_hooks=od(), _forward_hooks_with_kwargs=od(), _forward_hooks_always_called=od(),
        _forward_pre_hooks=od(), _forward_pre_hooks_with_kwargs=od(),
        _state_dict_hooks=od(), _state_dict_pre_hooks=od(),
        _load_state_dict_pre_hooks=od(), _load_state_dict_post_hooks=od(),
        _modules=od(modules or {}),
    )
    state.update(attrs)
    state["_init_args"] = tuple(init_args)
    state["_init_kwargs"] = dict(init_kwargs or {})
    return state


def generator_record(G, module_src: str, *, init_style: str = "ada", architecture: str = "skip",
                     override: dict | None = None, drop=(), w_avg_beta=0.995, num_fp16_res: int = 0) -> Persistent:
    """NVIDIA-structured persistent record of OUR Generator ``G``.

    init_style: 'ada' (stylegan2-ada-pytorch: synthesis options under ``synthesis_kwargs``)
    or 'sg3' (stylegan3 repo's StyleGAN2 generator: synthesis options as top-level kwargs).
    override: our state-dict key -> tensor to write instead; drop: keys to leave out.
    """
    cfg = G.cfg
    sd = {k: v for k, v in G.state_dict().items()}
    sd.update(override or {})
    for k in drop:
        sd.pop(k, None)
    filt = setup_filter(list(cfg.resample_filter))

    def P(prefix, names):
        return {n: sd[f"{prefix}.{n}"] for n in names if f"{prefix}.{n}" in sd}

    def fc(prefix, in_f, out_f, activation="linear", lr=1.0, bias_init=0):
        return Persistent("FullyConnectedLayer", module_src, module_state(
            params=P(prefix, ["weight", "bias"]),
            init_kwargs=dict(activation=activation, lr_multiplier=lr, bias_init=bias_init),
            init_args=(in_f, out_f),
            activation=activation, weight_gain=np.float64(lr / np.sqrt(in_f)), bias_gain=lr))

    # mapping
    hidden = [cfg.mapping_layer_features] * (cfg.num_mapping_layers - 1)
    feats = [cfg.z_dim + cfg.mapping_embed_features] + hidden + [cfg.w_dim]
    mmods = collections.OrderedDict()
    if cfg.c_dim:
        mmods["embed"] = fc("mapping.embed", cfg.c_dim, cfg.mapping_embed_features)
    for i in range(cfg.num_mapping_layers):
        mmods[f"fc{i}"] = fc(f"mapping.fc{i}", feats[i], feats[i + 1], "lrelu", cfg.mapping_lr_mul)
    mapping_kwargs = EasyDict(num_layers=cfg.num_mapping_layers)
    if cfg.embed_features is not None:
        mapping_kwargs["embed_features"] = cfg.embed_features
    if cfg.layer_features is not None:
        mapping_kwargs["layer_features"] = cfg.layer_features
    if cfg.mapping_lr_mul != 0.01:
        mapping_kwargs["lr_multiplier"] = cfg.mapping_lr_mul
    if w_avg_beta != 0.995:
        mapping_kwargs["w_avg_beta"] = w_avg_beta
    mapping = Persistent("MappingNetwork", module_src, module_state(
        buffers=P("mapping", ["w_avg"]), modules=mmods,
        init_kwargs=dict(z_dim=cfg.z_dim, c_dim=cfg.c_dim, w_dim=cfg.w_dim, num_ws=cfg.num_ws, **mapping_kwargs),
        z_dim=cfg.z_dim, c_dim=cfg.c_dim, w_dim=cfg.w_dim, num_ws=cfg.num_ws,
        num_layers=cfg.num_mapping_layers, w_avg_beta=w_avg_beta))

    # synthesis
    def layer(prefix, in_ch, out_ch, res, up):
        return Persistent("SynthesisLayer", module_src, module_state(
            params=P(prefix, ["weight", "noise_strength", "bias"]),
            buffers={"resample_filter": filt, **P(prefix, ["noise_const"])},
            modules={"affine": fc(f"{prefix}.affine", cfg.w_dim, in_ch, bias_init=1)},
            init_kwargs=dict(w_dim=cfg.w_dim, resolution=res, up=up, conv_clamp=cfg.conv_clamp,
                             channels_last=False, resample_filter=[1, 3, 3, 1]),
            init_args=(in_ch, out_ch),
            resolution=res, up=up, use_noise=True, activation="lrelu", conv_clamp=cfg.conv_clamp,
            padding=1, act_gain=np.float64(np.sqrt(2))))

    def torgb(prefix, in_ch):
        return Persistent("ToRGBLayer", module_src, module_state(
            params=P(prefix, ["weight", "bias"]),
            modules={"affine": fc(f"{prefix}.affine", cfg.w_dim, in_ch, bias_init=1)},
            init_kwargs=dict(w_dim=cfg.w_dim, conv_clamp=cfg.conv_clamp, channels_last=False),
            init_args=(in_ch, cfg.img_channels),
            conv_clamp=cfg.conv_clamp, weight_gain=np.float64(1 / np.sqrt(in_ch))))

    smods = collections.OrderedDict()
    for res in cfg.block_resolutions:
        pre = f"synthesis.b{res}"
        out_ch = cfg.channels(res)
        in_ch = cfg.channels(res // 2) if res > 4 else 0
        bmods = collections.OrderedDict()
        if res > 4:
            bmods["conv0"] = layer(f"{pre}.conv0", in_ch, out_ch, res, 2)
        bmods["conv1"] = layer(f"{pre}.conv1", out_ch, out_ch, res, 1)
        bmods["torgb"] = torgb(f"{pre}.torgb", out_ch)
        smods[f"b{res}"] = Persistent("SynthesisBlock", module_src, module_state(
            params=P(pre, ["const"]), buffers={"resample_filter": filt}, modules=bmods,
            init_kwargs=dict(w_dim=cfg.w_dim, resolution=res, img_channels=cfg.img_channels,
                             is_last=res == cfg.img_resolution, use_fp16=False,
                             architecture=architecture, conv_clamp=cfg.conv_clamp),
            init_args=(in_ch, out_ch),
            in_channels=in_ch, w_dim=cfg.w_dim, resolution=res, img_channels=cfg.img_channels,
            is_last=res == cfg.img_resolution, architecture=architecture, use_fp16=False,
            channels_last=False, num_conv=1 if res == 4 else 2, num_torgb=1))
    synthesis_kwargs = EasyDict(channel_base=cfg.channel_base, channel_max=cfg.channel_max,
                                num_fp16_res=num_fp16_res, conv_clamp=cfg.conv_clamp)
    if architecture != "skip":
        synthesis_kwargs["architecture"] = architecture
    synthesis = Persistent("SynthesisNetwork", module_src, module_state(
        modules=smods,
        init_kwargs=dict(w_dim=cfg.w_dim, img_resolution=cfg.img_resolution,
                         img_channels=cfg.img_channels, **synthesis_kwargs),
        w_dim=cfg.w_dim, img_resolution=cfg.img_resolution, img_resolution_log2=cfg.log2_res,
        img_channels=cfg.img_channels, block_resolutions=list(cfg.block_resolutions),
        num_ws=cfg.num_ws))

    top_kwargs = dict(z_dim=cfg.z_dim, w_dim=cfg.w_dim, mapping_kwargs=mapping_kwargs,
                      c_dim=cfg.c_dim, img_resolution=cfg.img_resolution, img_channels=cfg.img_channels)
    if init_style == "ada":
        top_kwargs["synthesis_kwargs"] = synthesis_kwargs
    elif init_style == "sg3":
        top_kwargs.update(synthesis_kwargs)
        top_kwargs["fused_modconv_default"] = "inference_only"
    else:
        raise ValueError(init_style)
    return Persistent("Generator", module_src, module_state(
        modules=collections.OrderedDict(synthesis=synthesis, mapping=mapping),
        init_kwargs=top_kwargs,
        z_dim=cfg.z_dim, c_dim=cfg.c_dim, w_dim=cfg.w_dim, img_resolution=cfg.img_resolution,
        img_channels=cfg.img_channels, num_ws=cfg.num_ws))


def discriminator_record(module_src: str, img_resolution: int = 32) -> Persistent:
    """A small stand-in discriminator (real ones are ~30M parameters): only structure matters."""
    fc = Persistent("FullyConnectedLayer", module_src, module_state(
        params={"weight": torch.randn(8, 16), "bias": torch.zeros(8)},
        activation="lrelu", weight_gain=np.float64(0.25), bias_gain=1))
    return Persistent("Discriminator", module_src, module_state(
        modules={"fc": fc}, buffers={"resample_filter": setup_filter([1, 3, 3, 1])},
        init_kwargs=dict(c_dim=0, img_resolution=img_resolution, img_channels=3,
                         architecture="resnet", channel_base=512, channel_max=32),
        c_dim=0, img_resolution=img_resolution, img_channels=3))


def write_nvidia_pickle(G, path, marker_path, *, protocol: int = 4, keys=("G", "D", "G_ema"),
                        **record_kwargs):
    """Write ``G`` as an NVIDIA network pickle: dict(G, D, G_ema, augment_pipe, training_set_kwargs)."""
    src = marker_module_src(marker_path)
    rec = generator_record(G, src, **record_kwargs)
    data = {}
    if "G" in keys:
        data["G"] = generator_record(G, src, **record_kwargs)   # a separate (non-EMA) copy
    if "D" in keys:
        data["D"] = discriminator_record(src, G.cfg.img_resolution)
    if "G_ema" in keys:
        data["G_ema"] = rec
    data["augment_pipe"] = None
    data["training_set_kwargs"] = EasyDict(
        class_name="training.dataset.ImageFolderDataset", path="/data/tiny.zip",
        use_labels=bool(G.cfg.c_dim), max_size=100, xflip=False, resolution=G.cfg.img_resolution)
    dump(data, path, protocol=protocol)
    return path


def write_forbidden_global_pickle(G, path, marker_path, func=("os", "system")):
    """An otherwise valid network pickle whose training_set_kwargs call ``os.system``
    (the command would create the marker file)."""
    src = marker_module_src(marker_path)
    data = dict(G_ema=generator_record(G, src), augment_pipe=None,
                training_set_kwargs=Call(Global(*func), (f"touch {marker_path}",)))
    dump(data, path)
    return path


def write_tf_era_pickle(path):
    """Looks like an old TensorFlow StyleGAN pickle: a tuple of dnnlib.tflib Network objects."""
    net = Call(Global("dnnlib.tflib.network", "Network"), ())
    dump((net, net, net), path)
    return path


def write_malformed_stylegan3_pickle(path, marker_path, w_dim: int = 16):
    """A tiny pickle that looks like StyleGAN3 (SynthesisInput + L0_36_512-style layers) but whose
    structure is not NVIDIA's design (2 layers, made-up sizes): must be refused clearly."""
    src = marker_module_src(marker_path, "class SynthesisInput: pass\n")
    fc = lambda i, o: Persistent("FullyConnectedLayer", src, module_state(  # noqa: E731
        params={"weight": torch.randn(o, i), "bias": torch.zeros(o)}, activation="lrelu", bias_gain=0.01))
    mapping = Persistent("MappingNetwork", src, module_state(
        modules={"fc0": fc(w_dim, w_dim), "fc1": fc(w_dim, w_dim)}, buffers={"w_avg": torch.zeros(w_dim)},
        z_dim=w_dim, c_dim=0, w_dim=w_dim, num_ws=4, num_layers=2))
    inp = Persistent("SynthesisInput", src, module_state(
        params={"weight": torch.randn(8, 8)}, buffers={"transform": torch.eye(3), "freqs": torch.randn(8, 2),
                                                      "phases": torch.randn(8)},
        modules={"affine": fc(w_dim, 4)}, w_dim=w_dim, channels=8, size=[36, 36], sampling_rate=16, bandwidth=2))
    layers = collections.OrderedDict(input=inp)
    for i, name in enumerate(["L0_36_8", "L1_36_8", "L2_32_3"]):
        layers[name] = Persistent("SynthesisLayer", src, module_state(
            params={"weight": torch.randn(8, 8, 3, 3), "bias": torch.zeros(8)},
            buffers={"up_filter": torch.ones(4), "down_filter": torch.ones(4), "magnitude_ema": torch.ones([])},
            modules={"affine": fc(w_dim, 8)}, is_torgb=i == 2, in_size=[36, 36], out_size=[36, 36]))
    synthesis = Persistent("SynthesisNetwork", src, module_state(
        modules=layers, layer_names=list(layers)[1:], w_dim=w_dim, img_resolution=32, img_channels=3,
        num_ws=4, num_layers=2))
    G = Persistent("Generator", src, module_state(
        modules=collections.OrderedDict(synthesis=synthesis, mapping=mapping),
        init_kwargs=dict(z_dim=w_dim, c_dim=0, w_dim=w_dim, img_resolution=32, img_channels=3,
                         mapping_kwargs=EasyDict(num_layers=2), channel_base=512, channel_max=8,
                         magnitude_ema_beta=0.999),
        z_dim=w_dim, c_dim=0, w_dim=w_dim, img_resolution=32, img_channels=3, num_ws=4))
    dump(dict(G=G, D=None, G_ema=G, augment_pipe=None, training_set_kwargs=None), path)
    return path


# ----------------------------------------------------------------------------- StyleGAN3
def stylegan3_generator_record(G, module_src: str, *, fp32: bool = False, override: dict | None = None,
                               drop=(), layer_attrs: dict | None = None, extra_kwargs: dict | None = None,
                               filters: dict | None = None) -> Persistent:
    """NVIDIA-structured persistent record of OUR StyleGAN3 generator ``G`` (anything with ``cfg``
    and ``state_dict()``; as
    ``training/networks_stylegan3.py`` objects pickle: init kwargs as ``train.py`` passes them,
    every layer's design attributes -- numpy arrays for sizes, numpy floats for rates and cutoffs --,
    the designed filters as buffers, ``None`` buffers for identity filters).

    fp32: the ``--fp32`` options (num_fp16_res=0, conv_clamp=None in the kwargs).
    override / drop: our state-dict keys -> tensors to write instead / to leave out.
    layer_attrs: {layer name: {attribute: value}} written over the recorded attributes.
    extra_kwargs: more Generator init kwargs.  filters: {'<layer>.up_filter': tensor} overrides.
    """
    cfg = G.cfg
    sd = dict(G.state_dict())
    sd.update(override or {})
    for k in drop:
        sd.pop(k, None)

    def P(prefix, names):
        return {n: sd[f"{prefix}.{n}"] for n in names if f"{prefix}.{n}" in sd}

    def fc(prefix, in_f, out_f, activation="linear", lr=1.0, bias_init=0, weight_init=1):
        return Persistent("FullyConnectedLayer", module_src, module_state(
            params=P(prefix, ["weight", "bias"]),
            init_kwargs=dict(in_features=in_f, out_features=out_f, activation=activation, lr_multiplier=lr,
                             bias_init=bias_init, weight_init=weight_init),
            in_features=in_f, out_features=out_f, activation=activation,
            weight_gain=np.float64(lr / np.sqrt(in_f)), bias_gain=lr))

    mmods = collections.OrderedDict()
    if cfg.c_dim:
        mmods["embed"] = fc("mapping.embed", cfg.c_dim, cfg.w_dim)
    feats = [cfg.z_dim + (cfg.w_dim if cfg.c_dim else 0)] + [cfg.w_dim] * cfg.num_mapping_layers
    for i in range(cfg.num_mapping_layers):
        mmods[f"fc{i}"] = fc(f"mapping.fc{i}", feats[i], feats[i + 1], "lrelu", cfg.mapping_lr_mul)
    mattrs = dict(z_dim=cfg.z_dim, c_dim=cfg.c_dim, w_dim=cfg.w_dim, num_ws=cfg.num_ws,
                  num_layers=cfg.num_mapping_layers, w_avg_beta=0.998)
    if not cfg.c_dim:
        mattrs["embed"] = None
    mapping = Persistent("MappingNetwork", module_src, module_state(
        buffers=P("mapping", ["w_avg"]), modules=mmods,
        init_kwargs=dict(z_dim=cfg.z_dim, c_dim=cfg.c_dim, w_dim=cfg.w_dim, num_ws=cfg.num_ws,
                         num_layers=cfg.num_mapping_layers), **mattrs))

    from nada_ops.stylegan.networks_sg3 import layer_filters
    spec = cfg.input_spec()
    size2 = np.broadcast_to(np.asarray(spec["size"]), [2])
    inp = Persistent("SynthesisInput", module_src, module_state(
        params=P("synthesis.input", ["weight"]), buffers=P("synthesis.input", ["transform", "freqs", "phases"]),
        modules={"affine": fc("synthesis.input.affine", cfg.w_dim, 4, bias_init=[1, 0, 0, 0], weight_init=0)},
        init_kwargs=dict(w_dim=cfg.w_dim, channels=spec["channels"], size=spec["size"],
                         sampling_rate=np.float64(spec["sampling_rate"]), bandwidth=np.float64(spec["bandwidth"])),
        w_dim=cfg.w_dim, channels=spec["channels"], size=size2, sampling_rate=np.float64(spec["sampling_rate"]),
        bandwidth=np.float64(spec["bandwidth"])))
    smods = collections.OrderedDict(input=inp)
    magnitude_ema_beta = 0.5 ** (32 / (20 * 1e3))
    for l in cfg.layers():
        pre = f"synthesis.{l.name}"
        fu, fd = layer_filters(l)                       # the designed filters, as NVIDIA stores them
        fu = (filters or {}).get(f"{l.name}.up_filter", fu)
        fd = (filters or {}).get(f"{l.name}.down_filter", fd)
        buffers = collections.OrderedDict(P(pre, ["magnitude_ema"]))
        buffers["up_filter"] = fu
        buffers["down_filter"] = fd
        ik = dict(w_dim=cfg.w_dim, is_torgb=l.is_torgb, is_critically_sampled=l.is_critically_sampled,
                  use_fp16=np.bool_(l.use_fp16), in_channels=l.in_channels, out_channels=l.out_channels,
                  in_size=l.in_size, out_size=l.out_size, in_sampling_rate=l.in_sampling_rate,
                  out_sampling_rate=l.out_sampling_rate, in_cutoff=np.float64(l.in_cutoff),
                  out_cutoff=np.float64(l.out_cutoff), in_half_width=np.float64(l.in_half_width),
                  out_half_width=np.float64(l.out_half_width), magnitude_ema_beta=magnitude_ema_beta)
        attrs = dict(
            w_dim=cfg.w_dim, is_torgb=l.is_torgb, is_critically_sampled=l.is_critically_sampled,
            use_fp16=np.bool_(l.use_fp16), in_channels=l.in_channels, out_channels=l.out_channels,
            in_size=np.broadcast_to(np.asarray(l.in_size), [2]), out_size=np.broadcast_to(np.asarray(l.out_size), [2]),
            in_sampling_rate=l.in_sampling_rate, out_sampling_rate=l.out_sampling_rate,
            tmp_sampling_rate=l.tmp_sampling_rate, in_cutoff=np.float64(l.in_cutoff),
            out_cutoff=np.float64(l.out_cutoff), in_half_width=np.float64(l.in_half_width),
            out_half_width=np.float64(l.out_half_width), conv_kernel=l.conv_kernel, conv_clamp=cfg.conv_clamp,
            magnitude_ema_beta=magnitude_ema_beta, up_factor=l.up, up_taps=l.up_taps, down_factor=l.down,
            down_taps=l.down_taps, down_radial=l.down_radial, padding=list(l.padding))
        attrs.update((layer_attrs or {}).get(l.name, {}))
        smods[l.name] = Persistent("SynthesisLayer", module_src, module_state(
            params=P(pre, ["weight", "bias"]), buffers=buffers,
            modules={"affine": fc(f"{pre}.affine", cfg.w_dim, l.in_channels, bias_init=1)},
            init_kwargs=ik, **attrs))
    kwargs = dict(channel_base=cfg.channel_base, channel_max=cfg.channel_max, magnitude_ema_beta=magnitude_ema_beta)
    if cfg.conv_kernel != 3:
        kwargs["conv_kernel"] = cfg.conv_kernel
    if cfg.use_radial_filters:
        kwargs["use_radial_filters"] = True
    if fp32:
        kwargs.update(num_fp16_res=0, conv_clamp=cfg.conv_clamp)
    for f in ("num_layers", "num_critical", "first_cutoff", "first_stopband", "last_stopband_rel", "margin_size",
              "output_scale", "filter_size", "lrelu_upsampling"):
        default = type(cfg).__dataclass_fields__[f].default
        if getattr(cfg, f) != default:
            kwargs[f] = getattr(cfg, f)
    kwargs.update(extra_kwargs or {})
    synthesis = Persistent("SynthesisNetwork", module_src, module_state(
        modules=smods,
        init_kwargs=dict(w_dim=cfg.w_dim, img_resolution=cfg.img_resolution, img_channels=cfg.img_channels, **kwargs),
        w_dim=cfg.w_dim, num_ws=cfg.num_ws, img_resolution=cfg.img_resolution, img_channels=cfg.img_channels,
        num_layers=cfg.num_layers, num_critical=cfg.num_critical, margin_size=cfg.margin_size,
        output_scale=cfg.output_scale, num_fp16_res=0 if fp32 else 4, layer_names=[l.name for l in cfg.layers()]))
    return Persistent("Generator", module_src, module_state(
        modules=collections.OrderedDict(synthesis=synthesis, mapping=mapping),
        init_kwargs=dict(z_dim=cfg.z_dim, w_dim=cfg.w_dim, mapping_kwargs=EasyDict(num_layers=cfg.num_mapping_layers),
                         **kwargs, c_dim=cfg.c_dim, img_resolution=cfg.img_resolution, img_channels=cfg.img_channels),
        z_dim=cfg.z_dim, c_dim=cfg.c_dim, w_dim=cfg.w_dim, img_resolution=cfg.img_resolution,
        img_channels=cfg.img_channels, num_ws=cfg.num_ws))


def stylegan3_module_src(marker_path) -> str:
    return marker_module_src(marker_path, "class SynthesisInput: pass\n")


def write_stylegan3_pickle(G, path, marker_path, *, protocol: int = 4, keys=("G", "D", "G_ema"), **record_kwargs):
    """Write our StyleGAN3 ``G`` as NVIDIA's training loop pickles a StyleGAN3 snapshot."""
    src = stylegan3_module_src(marker_path)
    data = {}
    if "G" in keys:
        data["G"] = stylegan3_generator_record(G, src, **record_kwargs)
    if "D" in keys:
        data["D"] = discriminator_record(src, G.cfg.img_resolution)
    if "G_ema" in keys:
        data["G_ema"] = stylegan3_generator_record(G, src, **record_kwargs)
    data["augment_pipe"] = None
    data["training_set_kwargs"] = dict(class_name="training.dataset.ImageFolderDataset", path="/data/tiny.zip",
                                       use_labels=bool(G.cfg.c_dim), max_size=100, xflip=False,
                                       resolution=G.cfg.img_resolution, random_seed=0)
    dump(data, path, protocol=protocol)
    return path
