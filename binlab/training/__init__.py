"""Training: the train loop and evaluation (:mod:`.train`), PTQ and QAT with distillation (:mod:`.qat`),
calibration data and Hessians (:mod:`.calibration`), whole-model allocations (:mod:`.allocation`),
the BERT-era multi-stage recipes (:mod:`.recipes`) and QAT health signals (:mod:`.health`)."""
