"""Lightning training of expert predictors (`specmd-train`). Nothing imports this package."""
