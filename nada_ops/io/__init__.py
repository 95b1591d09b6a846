"""Reading untrusted files with bounded cost (images, tensors, archives).

Everything a user or a downloaded file hands the pack is read through here: decoders run
with explicit limits, and a refusal names the file and the problem.

- ``errors``: :class:`UntrustedFileError` and :func:`describe` (bounded descriptions of file data)
- ``budget``: the memory / tensor-bytes / time budget of one read (``NADA_MAX_LOAD_BYTES``,
  ``NADA_MAX_LOAD_SECONDS``)
- ``tensors``: the one validation layer for tensors from files (geometry, dtype, finiteness)
- ``pickles``: the bounded unpickler every pickle reader is built on
- ``torch_files``: ``torch.save`` zip / legacy files and pickled storages, without ``torch.load``
- ``safetensors_files``: safetensors read from a validated header; bounded JSON
- ``numpy_files``: ``.npy`` arrays and numpy objects inside pickles
- ``images``: bounded image decoding
"""
