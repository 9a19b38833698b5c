"""ILRe: Intermediate Layer Retrieval for contexts longer than a model reads at full depth."""
