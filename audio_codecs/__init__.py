"""Every tokenizer behind one narrow interface: MuCodec, DAC and EnCodec (`base.Codec`)."""
