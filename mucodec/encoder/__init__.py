"""The encoder wing: MuEncoder (mel front end, conv subsampling, Conformer) and the tokenizer."""
