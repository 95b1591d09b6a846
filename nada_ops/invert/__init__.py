"""Real photos into a generator's latent space: pre-trained encoders (pSp, e4e, ReStyle;
:mod:`.encoders`, :mod:`.networks`) and FFHQ face alignment (:mod:`.align`, landmarks from
:mod:`.landmarks`). Inversion by optimisation lives in :mod:`nada_ops.inversion`."""
