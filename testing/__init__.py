"""Generated audio and the demo corpus, for the demo, the benchmarks and the tests."""
