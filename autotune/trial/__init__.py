"""One trial: a slimmed copy of the model (features dropped, channels pruned, layers unfrozen),
fine-tuned and measured."""
