"""Encoders behind one small contract (learn, embed, reset, state); arrive with issue 3."""
