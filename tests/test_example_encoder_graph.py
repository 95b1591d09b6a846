"""The encoder example (photo -> Align Face -> e4e -> source and adapted, pasted back) executed as
ComfyUI executes it, with tiny stand-ins under the example's own file names: a tiny generator as
the source and adapted models and a tiny e4e checkpoint in the authors' format as
models/stylegan_encoders/e4e_ffhq_encode.pt."""
import json

import pytest

from test_example_graphs import ADAPTED, SOURCE, _load, _overrides, _tiny, env  # noqa: F401  (fixture)
from nada_ops.stylegan.io import load_generator, save_generator
from workflow_runner import builder, run_workflow
from writers.encoders import write_encoder_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


def test_encode_photo_graph(env):  # noqa: F811
    save_generator(_tiny(1), env.stylegan_dir / ADAPTED)
    source = load_generator(env.stylegan_dir / SOURCE).G
    enc_dir = env.models_dir / "stylegan_encoders"
    enc_dir.mkdir(parents=True)
    write_encoder_checkpoint(enc_dir / builder().ENCODER, "Encoder4Editing", source)
    wf = _load("encode_photo_to_adapted")
    # the example's landmarks are those of an aligned 1024 px face: the same face at 32 px
    lm = [[(x + 0.5) * 32 / 1024 - 0.5, (y + 0.5) * 32 / 1024 - 0.5]
          for x, y in json.loads(builder().ALIGNED_1024_LANDMARKS)]
    over = _overrides(wf)
    over["NADAAlignFace"] = {"size": 32, "landmarks": json.dumps(lm)}
    results, core = run_workflow(wf, env.nodes, over)
    recon, adapted, pasted = core.saved_images
    assert recon.shape == adapted.shape == pasted.shape == (1, 32, 32, 3)
    info = next(r[2] for r in results.values() if len(r) == 3 and isinstance(r[2], str) and "encoder" in r[2])
    assert "e4e encoder" in info and "note" not in info        # the encoder's decoder is the source model
    # the aligned face of an already aligned photo is the photo itself (identity crop): pasting the
    # adapted face back gives (nearly) the adapted face
    assert float((pasted - adapted).abs().mean()) < 0.05
