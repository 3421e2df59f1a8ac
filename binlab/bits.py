"""How many bits binlab's size accounting gives one full-precision number (a scale, a mean, a
threshold, a bias): float32's 32. The methods' ``storage()`` and the packed codecs count with it, so
a packed file's size equals the accounting."""

FP_BITS = 32
