"""What a binarized model is once trained: bit-packing kernels (:mod:`.kernels`), the codecs a packed
file stores (:mod:`.codecs`), the modules that compute with them (:mod:`.packed`), the file format
(:mod:`.export`) and exact size accounting (:mod:`.size`)."""
