-- Drop a staging table of this domain.
DROP TABLE IF EXISTS `{dataset}.{table}`
