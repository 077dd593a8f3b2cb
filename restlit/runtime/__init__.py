"""What every command shares at run time: output directories, locks and atomic writes; quiet third-party logs."""
