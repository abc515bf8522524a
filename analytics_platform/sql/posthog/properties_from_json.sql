-- properties_json fragment when the events table's `properties` is a JSON column: used as is.
properties
