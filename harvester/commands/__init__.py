"""Project commands for the ``scrapy`` tool (``COMMANDS_MODULE``): Scrapy's own, where
this project needs them to behave differently."""
