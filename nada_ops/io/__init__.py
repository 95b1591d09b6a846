"""Reading untrusted files with bounded cost (images, tensors, archives).

Everything a user or a downloaded file hands the pack is read through here: decoders run
with explicit limits, and a refusal names the file and the problem.
"""
