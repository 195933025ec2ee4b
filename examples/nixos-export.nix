# For `nix eval --apply`: environment.persistence without the options impermanence has removed
# (allowOther, removePrefixDirectory, defaultDirectoryMethod; a directory's method; a user's
# home), whose value is an error that stops `nix eval --json` ("The option `allowOther' can no
# longer be used since it's been removed"). Everything else is kept as evaluated.
persistence:
builtins.mapAttrs (_: storage:
  removeAttrs storage [ "allowOther" "removePrefixDirectory" "defaultDirectoryMethod" ] // {
    directories = map (d: removeAttrs d [ "method" ]) storage.directories;
    users = builtins.mapAttrs (_: user:
      removeAttrs user [ "home" ] // {
        directories = map (d: removeAttrs d [ "method" ]) user.directories;
      }) storage.users;
  }) persistence
