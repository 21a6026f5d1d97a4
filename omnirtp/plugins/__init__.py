"""omnirtp's plugin package: modules here hold module-level plugin objects
(``ITransformFactory``, ``ICodecFactory``) found with
``twisted.plugin.getPlugins(I, omnirtp.plugins)``.  Other distributions may
add modules to an ``omnirtp/plugins`` directory of their own on sys.path
(Twisted's ``pluginPackagePaths``)."""

from twisted.plugin import pluginPackagePaths

__path__.extend(pluginPackagePaths(__name__))
__all__ = []
