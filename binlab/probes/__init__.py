"""Probes of a trained model: loss-landscape slices and Hessian curvature (:mod:`.landscape`)."""
