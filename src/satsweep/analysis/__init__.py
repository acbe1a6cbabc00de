"""Reports that explain results: confusion matrices, error analysis, EDA."""
