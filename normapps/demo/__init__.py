"""A local web page for style transfer: ``python -m normapps.demo`` (``pip install 'normapps[demo]'``)."""
