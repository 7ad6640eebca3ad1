"""Scale-out on existing distributed engines (Ray Serve); nothing here schedules requests itself."""
