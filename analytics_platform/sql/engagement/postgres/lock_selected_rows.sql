-- fragment: lock the rows a SELECT returns until the end of the transaction
FOR UPDATE
