# meerkat_rt.v2: the protocol v2 surface (Meerkat 0.6.0 to 0.6.4): codec, bootstrap, backend.
