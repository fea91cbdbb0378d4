"""Translation engines, one module each, all behind `lmmdata.translator.Backend`."""
