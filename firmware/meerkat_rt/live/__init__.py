# meerkat_rt.live: the live surface (Meerkat 0.6.5 and later): codec and backend.
