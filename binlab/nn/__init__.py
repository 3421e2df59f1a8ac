"""The models and how they are quantized: the classifier and the causal LM (:mod:`.model`), loading
all-MiniLM-L6-v2 (:mod:`.pretrained`), ``quantize_``/``QuantSpec`` (:mod:`.quantize`), the task's
objective (:mod:`.objective`), greedy decoding (:mod:`.generate`) and the bigram reference LM (:mod:`.ngram`)."""
