"""Local intrinsic dimension experiments: estimators on manifolds, MMH, LID as a detector."""
