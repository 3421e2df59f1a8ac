"""The models and how they are quantized: the classifier and the causal LM (:mod:`.model`), the
recurrent LM of the LSTM era (:mod:`.lstm`, registered here so ``build`` finds it), loading
all-MiniLM-L6-v2 (:mod:`.pretrained`), ``quantize_``/``QuantSpec`` (:mod:`.quantize`), the task's
objective (:mod:`.objective`), greedy decoding (:mod:`.generate`) and the bigram reference LM (:mod:`.ngram`)."""

from . import lstm  # noqa: F401, E402 - registers arch='lstm' with binlab.nn.model.build
