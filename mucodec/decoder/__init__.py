"""The decoder wing: flow-matching DiT, Mel-VAE and HiFi-GAN, turning tokens back into audio."""
